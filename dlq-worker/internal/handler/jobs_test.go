package handler_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/dlq-worker/internal/auth"
	"github.com/epro-intake/dlq-worker/internal/replay"
	"github.com/epro-intake/dlq-worker/internal/store"
	"github.com/epro-intake/dlq-worker/internal/svc"
	"github.com/epro-intake/dlq-worker/internal/types"
)

// jobsYAML makes runners look for orphaned jobs often, so a take-over does not wait for the 2s default.
const jobsYAML = "    PollInterval: 100ms\n    LeaseTTL: 4s"

// replays counts the records on the source topic by their x-replay-of, waiting up to timeout for at least
// min of them.
func (w *worker) replays(min int, timeout time.Duration) map[uint64]int {
	w.t.Helper()
	out := map[uint64]int{}
	for _, m := range w.sourceRecords(min, timeout) {
		v, ok := header(m, report.HeaderReplayOf)
		if !ok {
			w.t.Fatalf("a record on the source topic has no %s", report.HeaderReplayOf)
		}
		id, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			w.t.Fatalf("x-replay-of %q: %v", v, err)
		}
		out[id]++
	}
	return out
}

// exactlyOnce checks that each dead letter of dls was replayed exactly once: one record on the topic, status
// replayed, one successful replay in its audit trail.
func (w *worker) exactlyOnce(dls []seeded) {
	w.t.Helper()
	w.replays(len(dls), 20*time.Second)
	// Give a duplicate that might still be on its way the time to show up.
	time.Sleep(300 * time.Millisecond)
	counts := w.replays(len(dls), 10*time.Second)
	total := 0
	for _, n := range counts {
		total += n
	}
	if total != len(dls) {
		w.t.Errorf("%d replay records on the topic for %d dead letters: %v", total, len(dls), counts)
	}
	for _, d := range dls {
		if counts[d.id] != 1 {
			w.t.Errorf("dead letter %d was replayed %d times", d.id, counts[d.id])
		}
		if s := w.status(d.id); s != store.StatusReplayed {
			w.t.Errorf("dead letter %d is %s", d.id, s)
		}
		ok := 0
		for _, a := range w.audit(d.id) {
			if a.action == store.ActionReplay && a.outcome == store.OutcomeOK {
				ok++
			}
		}
		if ok != 1 {
			w.t.Errorf("dead letter %d has %d successful replays in its audit trail", d.id, ok)
		}
	}
}

func (w *worker) startJob(tok, trial string, rate float64) types.JobResp {
	w.t.Helper()
	var started types.BulkReplayResp
	r := w.do(http.MethodPost, "/v1/replay-jobs", tok, map[string]any{"trialId": trial, "ratePerSecond": rate})
	if r.status != http.StatusAccepted {
		w.t.Fatalf("start = %d %s", r.status, r.body)
	}
	r.decode(w.t, &started)
	return *started.Job
}

func (w *worker) jobAction(tok string, id uint64, action string) response {
	w.t.Helper()
	return w.do(http.MethodPost, "/v1/replay-jobs/"+strconv.FormatUint(id, 10)+"/"+action, tok, nil)
}

// TestBulkJobResumesAfterRestart stops dlq-worker in the middle of a job as SIGTERM does and starts a new
// one on the same database and topics: the job goes on by itself where it stopped, and every dead letter is
// replayed exactly once.
func TestBulkJobResumesAfterRestart(t *testing.T) {
	w := newWorker(t, workerOptions{bulkYAML: jobsYAML})
	dls := w.seed(12, "T-RESTART", report.ErrorClassPermanent)
	operator := w.token("otto", auth.RoleOperator)
	job := w.startJob(operator, "T-RESTART", 8)
	waitFor(t, 30*time.Second, "a few replays", func() bool { return w.job(operator, job.ID).Done >= 3 })

	w.restart()
	var before int
	if err := w.db.QueryRow("SELECT COUNT(*) FROM dead_letters WHERE trial_id = 'T-RESTART' AND status = 'replayed'").Scan(&before); err != nil {
		t.Fatal(err)
	}
	if before >= len(dls) {
		t.Fatalf("the job finished (%d of %d) before the restart; the test proves nothing", before, len(dls))
	}
	// No one resumes it: the new process takes the job's released lease by itself.
	j := w.waitJob(operator, job.ID, store.JobDone, 60*time.Second)
	if j.Total != len(dls) || j.Done != len(dls) || j.Failed != 0 || j.Skipped != 0 || j.LastError != "" {
		t.Fatalf("job after the restart = %+v", j)
	}
	t.Logf("%d of %d were replayed before the restart", before, len(dls))
	w.exactlyOnce(dls)
}

// TestBulkJobSettlesAnItemItsCrashedRunnerSent plays a replica that crashed mid-item, twice: once after it
// marked the item sending and produced its record, once after marking it sending but before producing;
// neither outcome was recorded, and the crashed replica's lease runs out. The new process must not send the
// first again and must send the second once.
func TestBulkJobSettlesAnItemItsCrashedRunnerSent(t *testing.T) {
	w := newWorker(t, workerOptions{bulkYAML: jobsYAML})
	produced := w.seed(3, "T-CRASH-A", report.ErrorClassPermanent)
	notProduced := w.seed(2, "T-CRASH-B", report.ErrorClassPermanent)
	operator := w.token("otto", auth.RoleOperator)
	ctx := context.Background()

	// The phases run one after the other: the embedded MySQL loses updates when transactions of two jobs
	// interleave (a real server's row locks do not), which would fail this test for the wrong reason.
	crash := func(dls []seeded, trial string, produce bool) {
		w.stop()
		// The crashed replica: wired as main wires it, never started; it does by hand what a runner does up to
		// the crash, through the same store and Kafka calls.
		crashed, err := svc.NewServiceContext(ctx, w.cfg)
		if err != nil {
			t.Fatal(err)
		}
		var ids []uint64
		for _, d := range dls {
			ids = append(ids, d.id)
		}
		job, err := crashed.Jobs.Create(ctx, store.Job{Actor: "otto", Filter: store.Filter{TrialID: trial}, RatePerSecond: 50}, ids,
			store.AuditEntry{Actor: "otto", Role: auth.RoleOperator, Action: store.ActionBulkReplay, Outcome: store.OutcomeOK})
		if err != nil {
			t.Fatal(err)
		}
		if got, ok, err := crashed.Jobs.Claim(ctx, "crashed", 2*time.Second); err != nil || !ok || got.ID != job.ID {
			t.Fatalf("claim = %+v, %v, %v", got, ok, err)
		}
		item, ok, err := crashed.Jobs.Next(ctx, job.ID, "crashed", 2*time.Second)
		if err != nil || !ok {
			t.Fatalf("next = %v, %v", ok, err)
		}
		dl, err := crashed.DeadLetters.Get(ctx, item.DeadLetterID)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := crashed.Resolver.Message(dl)
		if err != nil {
			t.Fatal(err)
		}
		topic, err := replay.NewKafkaTopic(w.brokers)
		if err != nil {
			t.Fatal(err)
		}
		probe, err := topic.EndOffsets(ctx, msg.Topic)
		if err != nil {
			t.Fatal(err)
		}
		if err := crashed.Jobs.MarkSending(ctx, item, "crashed", 2*time.Second, probe); err != nil {
			t.Fatal(err)
		}
		if produce {
			if err := crashed.Producer.Send(ctx, msg); err != nil {
				t.Fatal(err)
			}
		}
		_ = crashed.Close() // dies without releasing its lease

		w.start()
		j := w.waitJob(operator, job.ID, store.JobDone, 60*time.Second)
		if j.Done != j.Total || j.Failed != 0 || j.Total != len(dls) {
			t.Errorf("job %d = %+v", job.ID, j)
		}
	}
	crash(produced, "T-CRASH-A", true)
	crash(notProduced, "T-CRASH-B", false)

	w.exactlyOnce(append(produced, notProduced...))
	found := false
	for _, a := range w.audit(produced[0].id) {
		found = found || (a.action == store.ActionReplay && a.outcome == store.OutcomeOK &&
			strings.Contains(a.reason, "found on the topic"))
	}
	if !found {
		t.Errorf("the replay found on the topic is not audited as such: %+v", w.audit(produced[0].id))
	}
}

// TestBulkJobPauseResumeCancel: a pause stops replays until the resume, a cancel ends the job with the rest
// untouched, each is audited, and only operators may do them.
func TestBulkJobPauseResumeCancel(t *testing.T) {
	w := newWorker(t, workerOptions{bulkYAML: jobsYAML})
	dls := w.seed(14, "T-PAUSE-API", report.ErrorClassPermanent)
	operator := w.token("otto", auth.RoleOperator)
	reviewer := w.token("rita", auth.RoleReviewer)
	job := w.startJob(operator, "T-PAUSE-API", 5)
	waitFor(t, 30*time.Second, "two replays", func() bool { return w.job(operator, job.ID).Done >= 2 })

	if r := w.jobAction(reviewer, job.ID, "pause"); r.status != http.StatusForbidden {
		t.Fatalf("pause by a reviewer = %d", r.status)
	}
	var paused types.JobResp
	r := w.jobAction(operator, job.ID, "pause")
	if r.status != http.StatusOK {
		t.Fatalf("pause = %d %s", r.status, r.body)
	}
	r.decode(t, &paused)
	if paused.State != store.JobPaused || paused.StateReason != "paused by otto" {
		t.Fatalf("paused = %+v", paused)
	}
	if r := w.jobAction(operator, job.ID, "pause"); r.status != http.StatusConflict || r.errorCode(t) != "CONFLICT" {
		t.Fatalf("second pause = %d %s", r.status, r.body)
	}
	countReplayed := func() int {
		var n int
		if err := w.db.QueryRow("SELECT COUNT(*) FROM dead_letters WHERE trial_id = 'T-PAUSE-API' AND status = 'replayed'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// An item already being sent when the pause came may finish; nothing starts after it.
	time.Sleep(500 * time.Millisecond)
	atPause, onTopic := countReplayed(), len(w.sourceRecordsNow())
	time.Sleep(1500 * time.Millisecond) // 7 slots at 5 per second
	if n, m := countReplayed(), len(w.sourceRecordsNow()); n != atPause || m != onTopic {
		t.Fatalf("replays went on while paused: %d -> %d replayed, %d -> %d on the topic", atPause, n, onTopic, m)
	}
	if j := w.job(reviewer, job.ID); j.State != store.JobPaused || j.Done != atPause {
		t.Fatalf("paused job = %+v, %d replayed", j, atPause)
	}

	var resumed types.JobResp
	r = w.jobAction(operator, job.ID, "resume")
	r.decode(t, &resumed)
	if r.status != http.StatusOK || resumed.State != store.JobRunning {
		t.Fatalf("resume = %d %s", r.status, r.body)
	}
	waitFor(t, 30*time.Second, "replays after the resume", func() bool { return countReplayed() >= atPause+3 })

	var cancelled types.JobResp
	r = w.jobAction(operator, job.ID, "cancel")
	r.decode(t, &cancelled)
	if r.status != http.StatusOK || cancelled.State != store.JobCancelled {
		t.Fatalf("cancel = %d %s", r.status, r.body)
	}
	time.Sleep(500 * time.Millisecond)
	atCancel := countReplayed()
	time.Sleep(1200 * time.Millisecond)
	if n := countReplayed(); n != atCancel || atCancel >= len(dls) {
		t.Fatalf("after the cancel: %d -> %d of %d replayed", atCancel, n, len(dls))
	}
	for _, action := range []string{"resume", "pause", "cancel"} {
		if r := w.jobAction(operator, job.ID, action); r.status != http.StatusConflict {
			t.Errorf("%s of a cancelled job = %d", action, r.status)
		}
	}
	if r := w.jobAction(operator, 99999, "cancel"); r.status != http.StatusNotFound {
		t.Errorf("cancel of an unknown job = %d", r.status)
	}
	j := w.job(reviewer, job.ID)
	if j.State != store.JobCancelled || j.Done != atCancel || j.Total != len(dls) || j.Failed != 0 {
		t.Fatalf("cancelled job = %+v, %d replayed", j, atCancel)
	}
	// The rest is untouched: still new, nothing in its audit trail, nothing on the topic.
	counts := w.replays(atCancel, 10*time.Second)
	untouched := 0
	for _, d := range dls {
		if w.status(d.id) == store.StatusReplayed {
			if counts[d.id] != 1 {
				t.Errorf("dead letter %d replayed %d times", d.id, counts[d.id])
			}
			continue
		}
		untouched++
		if w.status(d.id) != store.StatusNew || len(w.audit(d.id)) != 0 || counts[d.id] != 0 {
			t.Errorf("dead letter %d after the cancel: %s, audit %+v, %d records", d.id, w.status(d.id), w.audit(d.id), counts[d.id])
		}
	}
	if untouched == 0 {
		t.Fatal("the cancel left nothing untouched; the test proves nothing")
	}
	trail, err := w.svc.Audit.ForJob(context.Background(), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range trail {
		if e.DeadLetterID == 0 {
			actions = append(actions, e.Action+"/"+e.Outcome+"/"+e.Actor)
		}
	}
	want := []string{"bulk_replay/ok/otto", "job_pause/ok/otto", "job_pause/conflict/otto", "job_resume/ok/otto",
		"job_cancel/ok/otto", "job_resume/conflict/otto", "job_pause/conflict/otto", "job_cancel/conflict/otto"}
	if len(actions) != len(want) {
		t.Fatalf("job audit = %v, want %v", actions, want)
	}
	for i := range want {
		if actions[i] != want[i] {
			t.Fatalf("job audit = %v, want %v", actions, want)
		}
	}
}

// TestBulkJobRunsOnOneReplica runs two dlq-workers on one database: a job is run by one of them at a time,
// and every dead letter is replayed once.
func TestBulkJobRunsOnOneReplica(t *testing.T) {
	w := newWorker(t, workerOptions{bulkYAML: jobsYAML})
	dls := w.seed(10, "T-REPLICAS", report.ErrorClassPermanent)
	other := *w
	other.start()
	t.Cleanup(other.stop)
	operator := w.token("otto", auth.RoleOperator)
	job := w.startJob(operator, "T-REPLICAS", 20)
	owners := map[string]bool{}
	waitFor(t, 60*time.Second, "the job to finish", func() bool {
		var owner *string
		if err := w.db.QueryRow("SELECT lease_owner FROM replay_jobs WHERE id = ?", job.ID).Scan(&owner); err != nil {
			t.Fatal(err)
		}
		if owner != nil {
			owners[*owner] = true
		}
		return w.job(operator, job.ID).State == store.JobDone
	})
	if len(owners) != 1 {
		t.Errorf("the job was held by %d replicas: %v", len(owners), owners)
	}
	w.exactlyOnce(dls)
}
