package handler_test

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/reportdb/reportdbtest"
	"github.com/epro-intake/dlq-worker/internal/store"
	"github.com/epro-intake/dlq-worker/internal/types"
)

// waitReconciled polls the run until it is no longer running.
func (w *worker) waitReconciled(token string, id uint64) types.ReconciliationResp {
	w.t.Helper()
	var run types.ReconciliationResp
	waitFor(w.t, 30*time.Second, "reconciliation "+strconv.FormatUint(id, 10), func() bool {
		r := w.do(http.MethodGet, "/v1/reconciliations/"+strconv.FormatUint(id, 10), token, nil)
		if r.status != http.StatusOK {
			w.t.Fatalf("GET run: %d %s", r.status, r.body)
		}
		r.decode(w.t, &run)
		return run.State != "running"
	})
	return run
}

// The ops endpoint runs the command's engine for reviewers, in the background, one run at a time: a report
// on the topic without a row is missing; once its row exists the run is clean. Both runs are audited under
// the token's subject.
func TestReconciliationEndpoint(t *testing.T) {
	w := newWorker(t, workerOptions{})
	w.createReports()
	reviewer := w.token("alice", "reviewer")

	if r := w.do(http.MethodGet, "/v1/reconciliations", reviewer, nil); r.status != http.StatusNotFound {
		t.Errorf("latest before any run: %d %s", r.status, r.body)
	}
	if r := w.do(http.MethodPost, "/v1/reconciliations", "", map[string]any{}); r.status != http.StatusUnauthorized {
		t.Errorf("without a token: %d", r.status)
	}
	for _, body := range []map[string]any{{"fromTime": "yesterday"}, {"fromOffset": -1}, {"fromOffset": 1, "fromTime": "2026-01-01T00:00:00Z"}} {
		if r := w.do(http.MethodPost, "/v1/reconciliations", reviewer, body); r.status != http.StatusBadRequest || r.errorCode(t) != "VALIDATION_FAILED" {
			t.Errorf("%v: %d %s", body, r.status, r.body)
		}
	}

	patient := "P-" + uuid.NewString()[:8]
	rid, value := envelope(patient, "T-1", "1")
	wr := &kafka.Writer{Addr: kafka.TCP(w.brokers...), Topic: w.source, Balancer: &kafka.Murmur2Balancer{Consistent: true},
		RequiredAcks: kafka.RequireAll, Transport: &kafka.Transport{}}
	defer wr.Close()
	if err := wr.WriteMessages(context.Background(), kafka.Message{Key: []byte(patient), Value: value}); err != nil {
		t.Fatal(err)
	}
	rec := w.sourceRecords(1, 10*time.Second)[0]

	r := w.do(http.MethodPost, "/v1/reconciliations", reviewer, map[string]any{"toEnd": true})
	if r.status != http.StatusAccepted {
		t.Fatalf("start: %d %s", r.status, r.body)
	}
	var started types.ReconciliationResp
	r.decode(t, &started)
	run := w.waitReconciled(reviewer, started.ID)
	if run.State != "done" || run.Records != 1 || run.Missing != 1 || run.Counts["missing"] != 1 || run.ExceptionCount != 1 ||
		len(run.Exceptions) != 1 || run.Exceptions[0].RequestID != rid || run.Exceptions[0].Class != "missing" ||
		run.Exceptions[0].Partition != rec.Partition || run.Exceptions[0].Offset != rec.Offset || run.Actor != "alice" {
		t.Fatalf("run with the row missing: %+v", run)
	}

	reportdbtest.Insert(t, w.db, reportdbtest.Row{RequestID: rid, Topic: w.source, Partition: rec.Partition, Offset: rec.Offset})
	r = w.do(http.MethodPost, "/v1/reconciliations", reviewer, map[string]any{"toEnd": true, "fromOffset": 0})
	if r.status != http.StatusAccepted {
		t.Fatalf("second start: %d %s", r.status, r.body)
	}
	var second types.ReconciliationResp
	r.decode(t, &second)
	run = w.waitReconciled(reviewer, second.ID)
	if run.State != "done" || run.Records != 1 || run.Missing != 0 || run.Counts["stored"] != 1 || len(run.Exceptions) != 0 {
		t.Fatalf("clean run: %+v", run)
	}
	var latest types.ReconciliationResp
	w.do(http.MethodGet, "/v1/reconciliations", reviewer, nil).decode(t, &latest)
	if latest.ID != second.ID {
		t.Errorf("latest = %d, want %d", latest.ID, second.ID)
	}
	if r := w.do(http.MethodGet, "/v1/reconciliations/"+strconv.FormatUint(started.ID, 10), reviewer, nil); r.status != http.StatusNotFound {
		t.Errorf("an older run: %d, want 404", r.status)
	}

	rows, err := w.db.Query("SELECT actor, role, outcome FROM dead_letter_audit WHERE action = ? ORDER BY id", store.ActionReconcile)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var outcomes []string
	for rows.Next() {
		var actor, role, outcome string
		if err := rows.Scan(&actor, &role, &outcome); err != nil {
			t.Fatal(err)
		}
		if actor != "alice" || role != "reviewer" {
			t.Errorf("audit actor %q role %q", actor, role)
		}
		outcomes = append(outcomes, outcome)
	}
	if want := []string{"started", "missing", "started", "ok"}; !slices.Equal(outcomes, want) {
		t.Errorf("audit outcomes %v, want %v", outcomes, want)
	}
}

// The re-drive endpoint is an operator's: a reviewer may reconcile but not re-drive. An operator's re-drive
// of the latest finished run produces its missing record again (value as it was, x-redrive-of naming its
// position), in the background, audited under the operator; the run shows the counts. A second re-drive of
// the same run, or one of an older run, is refused and produces nothing.
func TestRedriveEndpoint(t *testing.T) {
	w := newWorker(t, workerOptions{})
	w.createReports()
	reviewer, operator := w.token("alice", "reviewer"), w.token("bob", "operator")

	patient := "P-" + uuid.NewString()[:8]
	rid, value := envelope(patient, "T-1", "1")
	wr := &kafka.Writer{Addr: kafka.TCP(w.brokers...), Topic: w.source, Balancer: &kafka.Murmur2Balancer{Consistent: true},
		RequiredAcks: kafka.RequireAll, Transport: &kafka.Transport{}}
	defer wr.Close()
	if err := wr.WriteMessages(context.Background(), kafka.Message{Key: []byte(patient), Value: value,
		Headers: []kafka.Header{{Key: report.HeaderRequestID, Value: []byte(rid)}}}); err != nil {
		t.Fatal(err)
	}
	rec := w.sourceRecords(1, 10*time.Second)[0]

	start := func() uint64 {
		t.Helper()
		r := w.do(http.MethodPost, "/v1/reconciliations", reviewer, map[string]any{"toEnd": true})
		if r.status != http.StatusAccepted {
			t.Fatalf("start: %d %s", r.status, r.body)
		}
		var run types.ReconciliationResp
		r.decode(t, &run)
		return run.ID
	}
	first := start()
	if run := w.waitReconciled(reviewer, first); run.Missing != 1 || run.Redrive != nil {
		t.Fatalf("run: %+v", run)
	}
	path := "/v1/reconciliations/" + strconv.FormatUint(first, 10) + "/redrive"
	if r := w.do(http.MethodPost, path, reviewer, nil); r.status != http.StatusForbidden {
		t.Fatalf("a reviewer's re-drive: %d %s", r.status, r.body)
	}
	if r := w.do(http.MethodPost, "/v1/reconciliations/"+strconv.FormatUint(first+1, 10)+"/redrive", operator, nil); r.status != http.StatusNotFound {
		t.Errorf("re-drive of no such run: %d %s", r.status, r.body)
	}
	if r := w.do(http.MethodPost, path, operator, nil); r.status != http.StatusAccepted {
		t.Fatalf("re-drive: %d %s", r.status, r.body)
	}
	var run types.ReconciliationResp
	waitFor(t, 30*time.Second, "the re-drive", func() bool {
		w.do(http.MethodGet, "/v1/reconciliations/"+strconv.FormatUint(first, 10), reviewer, nil).decode(t, &run)
		return run.Redrive != nil && run.Redrive.State != "running"
	})
	if rd := run.Redrive; rd.State != "done" || rd.Actor != "bob" || rd.Missing != 1 || rd.Redriven != 1 || rd.NotTried != 0 || rd.FinishedAt == "" {
		t.Fatalf("re-drive: %+v", rd)
	}
	if r := w.do(http.MethodPost, path, operator, nil); r.status != http.StatusConflict {
		t.Errorf("second re-drive of the run: %d %s", r.status, r.body)
	}

	recs := w.sourceRecords(2, 10*time.Second)
	if len(recs) != 2 {
		t.Fatalf("%d records on the source topic, want the original and its re-drive", len(recs))
	}
	redrive := recs[0]
	if redrive.Offset == rec.Offset && redrive.Partition == rec.Partition {
		redrive = recs[1]
	}
	target := w.source + "/" + strconv.Itoa(rec.Partition) + "/" + strconv.FormatInt(rec.Offset, 10)
	var redriveOf string
	for _, h := range redrive.Headers {
		if h.Key == report.HeaderRedriveOf {
			redriveOf = string(h.Value)
		}
	}
	if string(redrive.Value) != string(value) || string(redrive.Key) != patient || redriveOf != target {
		t.Errorf("re-drive record: key %q, x-redrive-of %q (want %q), same value %v", redrive.Key, redriveOf, target, string(redrive.Value) == string(value))
	}

	var outcomes []string
	rows, err := w.db.Query("SELECT actor, role, outcome, reason FROM dead_letter_audit WHERE action = ? ORDER BY id", store.ActionRedrive)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var actor, role, outcome, reason string
		if err := rows.Scan(&actor, &role, &outcome, &reason); err != nil {
			t.Fatal(err)
		}
		if actor != "bob" || role != "operator" || !strings.Contains(reason, target) || !strings.Contains(reason, rid) {
			t.Errorf("audit row %q %q %q", actor, role, reason)
		}
		outcomes = append(outcomes, outcome)
	}
	if want := []string{store.OutcomeStarted, store.OutcomeOK}; !slices.Equal(outcomes, want) {
		t.Errorf("redrive audit outcomes %v, want %v", outcomes, want)
	}
}
