package handler_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/dlq-worker/internal/auth"
	"github.com/epro-intake/dlq-worker/internal/logic"
	"github.com/epro-intake/dlq-worker/internal/types"
)

// A request-id conflict (epro-mq found the id stored with other content) is archived and listed for review
// like any dead letter, filterable by its class, and never replayed: the stored report under its id must
// stay as it is. It is resolved by a discard once the app sent the report under a new id.
func TestConflictIsArchivedListedAndNeverReplayed(t *testing.T) {
	w := newWorker(t, workerOptions{})
	conflicts := w.seed(2, "T-CONFLICT", report.ErrorClassConflict)
	w.seed(1, "T-CONFLICT", report.ErrorClassPermanent)
	reviewer := w.token("rita", auth.RoleReviewer)
	operator := w.token("otto", auth.RoleOperator)

	var list types.ListResp
	w.do(http.MethodGet, "/v1/dead-letters?errorClass=conflict", reviewer, nil).decode(t, &list)
	var ids []uint64
	for _, it := range list.Items {
		ids = append(ids, it.ID)
		if it.ErrorClass != report.ErrorClassConflict || it.Status != "new" || it.TrialID != "T-CONFLICT" {
			t.Errorf("listed %+v", it)
		}
	}
	// The list is newest first; the two were published to different partitions and may be archived in
	// either order, so compare them as a set.
	want := []uint64{max(conflicts[0].id, conflicts[1].id), min(conflicts[0].id, conflicts[1].id)}
	if !slices.Equal(ids, want) {
		t.Fatalf("errorClass=conflict lists %v, want %v (newest first)", ids, want)
	}

	dl := conflicts[0]
	w.createReports(dl.requestID) // the other report, stored under the same id
	var pre types.ReplayPreviewResp
	w.do(http.MethodGet, idPath(dl.id, "/replay-preview"), reviewer, nil).decode(t, &pre)
	if pre.Replayable || pre.ReportState != "stored" || !strings.Contains(pre.Reason, "conflict") {
		t.Errorf("preview = %+v, want not replayable because it is a conflict", pre)
	}
	r := w.do(http.MethodPost, idPath(dl.id, "/replay"), operator, nil)
	if r.status != http.StatusConflict || r.errorCode(t) != logic.CodeConflictNotReplayable {
		t.Fatalf("replay of a conflict = %d %s, want 409 %s", r.status, r.body, logic.CodeConflictNotReplayable)
	}
	if w.status(dl.id) != "new" {
		t.Errorf("status after the refused replay = %s", w.status(dl.id))
	}
	if a := w.audit(dl.id); len(a) != 1 || a[0].action != "replay" || a[0].outcome != "conflict" {
		t.Errorf("audit = %+v, want the refused replay", a)
	}

	// A bulk job over conflicts skips them and sends nothing.
	var started types.BulkReplayResp
	r = w.do(http.MethodPost, "/v1/replay-jobs", operator, map[string]any{"errorClass": "conflict", "ratePerSecond": 50})
	r.decode(t, &started)
	if r.status != http.StatusAccepted || started.Job == nil || started.Job.Total != 2 {
		t.Fatalf("start = %d %s", r.status, r.body)
	}
	if j := w.waitJob(reviewer, started.Job.ID, "done", 30*time.Second); j.Skipped != 2 || j.Failed != 0 {
		t.Fatalf("job = %+v, want both conflicts skipped", j)
	}
	if n := len(w.sourceRecordsNow()); n != 0 {
		t.Fatalf("%d records replayed; a conflict must never be", n)
	}

	r = w.do(http.MethodPost, idPath(dl.id, "/discard"), operator, map[string]string{"reasonCode": "superseded", "note": "resent under a new request id"})
	if r.status != http.StatusOK || w.status(dl.id) != "discarded" {
		t.Fatalf("discard = %d %s, status %s", r.status, r.body, w.status(dl.id))
	}
}
