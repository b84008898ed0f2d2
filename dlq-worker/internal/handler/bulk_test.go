package handler_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/dlq-worker/internal/auth"
	"github.com/epro-intake/dlq-worker/internal/types"
)

func (w *worker) job(tok string, id uint64) types.JobResp {
	w.t.Helper()
	var j types.JobResp
	r := w.do(http.MethodGet, "/v1/replay-jobs/"+strconv.FormatUint(id, 10), tok, nil)
	if r.status != http.StatusOK {
		w.t.Fatalf("job %d = %d %s", id, r.status, r.body)
	}
	r.decode(w.t, &j)
	return j
}

func (w *worker) waitJob(tok string, id uint64, state string, timeout time.Duration) types.JobResp {
	w.t.Helper()
	var j types.JobResp
	waitFor(w.t, timeout, "job in state "+state, func() bool {
		j = w.job(tok, id)
		return j.State == state
	})
	return j
}

func TestBulkReplayDryRunAndRateLimitedJob(t *testing.T) {
	w := newWorker(t, workerOptions{})
	dls := w.seed(6, "T-BULK", report.ErrorClassPermanent)
	w.seed(2, "T-OTHER", report.ErrorClassPermanent)
	w.createReports(dls[0].requestID, dls[1].requestID) // stored meanwhile by some other path
	operator := w.token("otto", auth.RoleOperator)
	reviewer := w.token("rita", auth.RoleReviewer)

	var dry types.BulkReplayResp
	r := w.do(http.MethodPost, "/v1/replay-jobs", operator, map[string]any{"trialId": "T-BULK", "dryRun": true})
	r.decode(t, &dry)
	if r.status != http.StatusOK || !dry.DryRun || dry.Count != 6 || dry.AlreadyStored != 2 || !dry.StoredKnown || dry.Job != nil {
		t.Fatalf("dry run = %d %s", r.status, r.body)
	}
	if n := len(w.sourceRecordsNow()); n != 0 {
		t.Fatalf("dry run produced %d records", n)
	}
	if r := w.do(http.MethodPost, "/v1/replay-jobs", operator, map[string]any{"from": "nope"}); r.status != http.StatusBadRequest {
		t.Errorf("bad filter = %d", r.status)
	}

	start := time.Now()
	var started types.BulkReplayResp
	r = w.do(http.MethodPost, "/v1/replay-jobs", operator, map[string]any{"trialId": "T-BULK", "ratePerSecond": 4})
	r.decode(t, &started)
	if r.status != http.StatusAccepted || started.Job == nil || started.Job.Total != 6 || started.Job.State != "running" {
		t.Fatalf("start = %d %s", r.status, r.body)
	}
	j := w.waitJob(reviewer, started.Job.ID, "done", 30*time.Second)
	elapsed := time.Since(start)
	if j.Done != 6 || j.Failed != 0 || j.Total != 6 || j.Actor != "otto" {
		t.Fatalf("finished job = %+v", j)
	}
	// Six replays at 4 per second: the first goes at once, the other five wait 250ms each.
	if elapsed < 1200*time.Millisecond {
		t.Errorf("job took %v; the rate limit of 4/s allows no less than 1.25s", elapsed)
	}
	for _, d := range dls {
		if w.status(d.id) != "replayed" {
			t.Errorf("dead letter %d is %s", d.id, w.status(d.id))
		}
		a := w.audit(d.id)
		if len(a) != 1 || a[0].action != "replay" || !a[0].jobID.Valid || uint64(a[0].jobID.Int64) != j.ID || a[0].actor != "otto" {
			t.Errorf("audit of %d = %+v", d.id, a)
		}
	}
	if n := len(w.sourceRecords(6, 10*time.Second)); n != 6 {
		t.Fatalf("source has %d records, want 6", n)
	}
	// Nothing new is left for the filter.
	if r := w.do(http.MethodPost, "/v1/replay-jobs", operator, map[string]any{"trialId": "T-BULK"}); r.status != http.StatusConflict {
		t.Errorf("second job = %d %s", r.status, r.body)
	}
	if r := w.do(http.MethodGet, "/v1/replay-jobs/99999", reviewer, nil); r.status != http.StatusNotFound {
		t.Errorf("unknown job = %d", r.status)
	}
}

func TestBulkReplayPausesOnProduceFailures(t *testing.T) {
	missing := "missing_topic_for_bulk"
	w := newWorker(t, workerOptions{allowMissing: missing, produceAttempts: 1})
	operator := w.token("otto", auth.RoleOperator)
	var msgs []kafka.Message
	var ids []string
	for i := 0; i < 5; i++ {
		patient := "P-PAUSE-" + strconv.Itoa(i)
		rid, val := envelope(patient, "T-PAUSE", "9")
		m := w.deadLetter(patient, val, rid, report.ErrorClassPermanent)
		for k, h := range m.Headers {
			if h.Key == report.HeaderDLTOriginalTopic {
				m.Headers[k].Value = []byte(missing)
			}
		}
		msgs = append(msgs, m)
		ids = append(ids, rid)
	}
	w.publish(msgs...)
	for _, id := range ids {
		w.waitArchived(id)
	}
	var started types.BulkReplayResp
	w.do(http.MethodPost, "/v1/replay-jobs", operator, map[string]any{"trialId": "T-PAUSE", "ratePerSecond": 50}).decode(t, &started)
	j := w.waitJob(operator, started.Job.ID, "paused", 60*time.Second)
	if j.Failed != 3 || j.Done != 0 || j.StateReason == "" {
		t.Fatalf("paused job = %+v; want it paused after 3 failures in a row", j)
	}
	if !strings.HasPrefix(j.LastError, "dead letter ") || !strings.HasSuffix(j.LastError, ": kafka did not acknowledge the replay") {
		t.Errorf("lastError = %q, want the dead letter's id and the kind of failure", j.LastError)
	}
	time.Sleep(300 * time.Millisecond)
	if again := w.job(operator, j.ID); again.Failed != 3 || again.State != "paused" {
		t.Fatalf("a paused job went on: %+v", again)
	}
	var n int
	_ = w.db.QueryRow("SELECT COUNT(*) FROM dead_letters WHERE trial_id = 'T-PAUSE' AND status = 'new'").Scan(&n)
	if n != 5 {
		t.Fatalf("%d of 5 dead letters still new", n)
	}
	// Resuming with the cause still there fails the rest and pauses again (2 left < 3: it ends done).
	var resumed types.JobResp
	r := w.do(http.MethodPost, "/v1/replay-jobs/"+strconv.FormatUint(j.ID, 10)+"/resume", operator, nil)
	r.decode(t, &resumed)
	if r.status != http.StatusOK || resumed.State != "running" {
		t.Fatalf("resume = %d %s", r.status, r.body)
	}
	j = w.waitJob(operator, j.ID, "done", 60*time.Second)
	if j.Failed != 5 {
		t.Errorf("after resume = %+v", j)
	}
	if r := w.do(http.MethodPost, "/v1/replay-jobs/"+strconv.FormatUint(j.ID, 10)+"/resume", operator, nil); r.status != http.StatusConflict {
		t.Errorf("resume of a finished job = %d", r.status)
	}
}

// TestBulkReplayPausesWhenReplaysComeBack plays epro-mq: every record the job replays is dead-lettered
// again, carrying its x-replay-of, and the job must pause itself.
func TestBulkReplayPausesWhenReplaysComeBack(t *testing.T) {
	w := newWorker(t, workerOptions{extraYAML: "List:\n  DefaultLimit: 50\n"})
	dls := w.seed(16, "T-BACK", report.ErrorClassPermanent)
	operator := w.token("otto", auth.RoleOperator)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// epro-mq's part: each dead letter the job replays fails again and comes back on the dead-letter topic
	// with x-replay-of. Driven by the job's audit rows rather than by reading the source topic, so the
	// round trip does not depend on a reader's start-up time.
	byID := map[uint64]seeded{}
	for _, d := range dls {
		byID[d.id] = d
	}
	go func() {
		sent := map[uint64]bool{}
		for ctx.Err() == nil {
			rows, err := w.db.QueryContext(ctx, "SELECT dead_letter_id FROM dead_letter_audit WHERE action = 'replay' AND outcome = 'ok'")
			if err != nil {
				return
			}
			var ids []uint64
			for rows.Next() {
				var id uint64
				if rows.Scan(&id) == nil && !sent[id] {
					ids = append(ids, id)
				}
			}
			rows.Close()
			for _, id := range ids {
				d := byID[id]
				_, val := envelope(d.patient, "T-BACK", "9")
				again := w.deadLetter(d.patient, val, d.requestID, report.ErrorClassPermanent,
					kafka.Header{Key: report.HeaderReplayOf, Value: []byte(strconv.FormatUint(id, 10))})
				wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
				if w.dlqWrite.WriteMessages(wctx, again) == nil {
					sent[id] = true
				}
				wcancel()
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()

	var started types.BulkReplayResp
	w.do(http.MethodPost, "/v1/replay-jobs", operator, map[string]any{"trialId": "T-BACK", "ratePerSecond": 2}).decode(t, &started)
	var j types.JobResp
	waitFor(t, 60*time.Second, "the job to pause", func() bool {
		j = w.job(operator, started.Job.ID)
		if j.State == "done" {
			t.Fatalf("the job finished without pausing: %+v", j)
		}
		return j.State == "paused"
	})
	if j.RedeadLettered < 3 || j.Done >= len(dls) || j.Failed != 0 {
		t.Fatalf("paused job = %+v; want a pause after 3 replays came back, before all %d were sent", j, len(dls))
	}
	var back int
	_ = w.db.QueryRow("SELECT COUNT(*) FROM dead_letters WHERE replay_of IS NOT NULL").Scan(&back)
	if back < 3 {
		t.Fatalf("%d re-dead-lettered rows with replay_of", back)
	}
	var withReplayOf types.ListResp
	w.do(http.MethodGet, "/v1/dead-letters?trialId=T-BACK&status=new&limit=100", operator, nil).decode(t, &withReplayOf)
	found := false
	for _, it := range withReplayOf.Items {
		if it.ReplayOf != 0 {
			found = true
		}
	}
	if !found {
		t.Error("list does not show replayOf on re-dead-lettered records")
	}
}

// sourceRecordsNow reads what the source topic holds without waiting for more.
func (w *worker) sourceRecordsNow() []kafka.Message {
	w.t.Helper()
	return w.sourceRecords(0, 5*time.Second)
}
