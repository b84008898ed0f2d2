package reconcile_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/reportdb"
	"github.com/epro-intake/dlq-worker/internal/reconcile"
	"github.com/epro-intake/dlq-worker/internal/store"
)

// The repair, with the fixture playing epro-mq: a lost row is found missing, `reconcile -redrive` produces
// the record again (value and headers byte for byte, plus x-redrive-of) and exits 4; once its re-drive is
// stored, a second run exits 0, the re-drive counting as stored_from_redrive and the original as a duplicate.
// Every step is audited, without report content.
func TestRedriveRepairsAMissingRecord(t *testing.T) {
	f := newFixture(t, 2)
	recs := f.produce(
		reportRecord(t, newID(), "p1", privateNote),
		reportRecord(t, newID(), "p2", privateNote,
			kafka.Header{Key: report.HeaderTraceparent, Value: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")}),
		reportRecord(t, newID(), "p3", privateNote),
	)
	for _, m := range recs {
		f.store(m)
	}
	f.commitAll()
	lost := recs[1]
	if _, err := f.db.Exec("DELETE FROM reports WHERE request_id = ?", lost.requestID); err != nil {
		t.Fatal(err)
	}

	// Without -redrive, nothing is produced.
	end := f.end(t.Context(), lost.Partition)
	code, _, stderr := f.command(t, "csv")
	if code != reconcile.ExitMissing || f.end(t.Context(), lost.Partition) != end {
		t.Fatalf("plain run: exit %d, want %d, and nothing produced; stderr:\n%s", code, reconcile.ExitMissing, stderr)
	}

	code, exceptions, stderr := f.command(t, "json", "-redrive")
	if code != reconcile.ExitRedriven {
		t.Fatalf("-redrive: exit %d, want %d; stderr:\n%s", code, reconcile.ExitRedriven, stderr)
	}
	if len(exceptions) != 1 || exceptions[0].Class != reconcile.Missing || exceptions[0].RequestID != lost.requestID {
		t.Fatalf("-redrive run lists %+v; want %s missing", exceptions, lost.requestID)
	}
	if !strings.Contains(stderr, "redriven=1 ") || strings.Contains(stderr, "private") {
		t.Errorf("stderr does not count one re-drive, or holds report content:\n%s", stderr)
	}

	// The re-drive is the original record again, on its partition, plus x-redrive-of.
	redrive := f.readAt(lost.Partition, f.end(t.Context(), lost.Partition)-1)
	target := f.topic + "/" + pos3(lost)
	if !bytes.Equal(redrive.Key, lost.Key) || !bytes.Equal(redrive.Value, lost.Value) {
		t.Fatalf("re-drive key/value differ from the original")
	}
	wantHeaders := append(slices.Clone(lost.Headers), kafka.Header{Key: report.HeaderRedriveOf, Value: []byte(target)})
	if !slices.EqualFunc(redrive.Headers, wantHeaders, func(a, b kafka.Header) bool { return a.Key == b.Key && bytes.Equal(a.Value, b.Value) }) {
		t.Fatalf("re-drive headers %v, want %v", redrive.Headers, wantHeaders)
	}

	// epro-mq stores the re-drive; the next run is clean.
	f.store(placed{Message: redrive, requestID: lost.requestID})
	f.commitAll()
	code, exceptions, stderr = f.command(t, "csv")
	if code != reconcile.ExitClean {
		t.Fatalf("run after the re-drive: exit %d; stderr:\n%s", code, stderr)
	}
	if len(exceptions) != 1 || exceptions[0].Class != reconcile.StoredFromRedrive || exceptions[0].Offset != redrive.Offset ||
		!strings.Contains(exceptions[0].Detail, target) {
		t.Errorf("run after the re-drive lists %+v; want only the re-drive as %s of %s", exceptions, reconcile.StoredFromRedrive, target)
	}
	if !strings.Contains(stderr, " duplicate=1") || !strings.Contains(stderr, " missing=0") {
		t.Errorf("the original is not counted as a duplicate:\n%s", stderr)
	}

	rows := f.audit(store.ActionRedrive)
	if len(rows) != 2 || rows[0].Outcome != store.OutcomeStarted || rows[1].Outcome != store.OutcomeOK {
		t.Fatalf("redrive audit rows %+v; want started, ok", rows)
	}
	for _, r := range rows {
		if !strings.Contains(r.Reason, target) || !strings.Contains(r.Reason, lost.requestID) || strings.Contains(r.Reason, "private") ||
			r.Role != reconcile.RoleCommand || !strings.HasPrefix(r.Actor, "os:") {
			t.Errorf("audit row %+v: want the target %s, the request id, the command's actor, no content", r, target)
		}
	}
	if n := len(f.audit(store.ActionReconcile)); n != 6 {
		t.Errorf("%d reconcile audit rows, want 6 (three runs)", n)
	}
}

// The guards: a record not classified missing is never re-driven, nor one whose row or dead letter came
// back between the run and the re-drive, nor an undecodable one; each refusal is audited and produces
// nothing. A produce Kafka does not acknowledge is a failure, audited, and the next record is still tried.
func TestRedriveGuards(t *testing.T) {
	f := newFixture(t, 1)
	recs := f.produce(
		reportRecord(t, newID(), "p1", privateNote), // stored: listed as if the run had called it missing
		reportRecord(t, newID(), "p1", privateNote), // its row comes back after the run
		reportRecord(t, newID(), "p1", privateNote), // dead-lettered after the run
		kafka.Message{Key: []byte("p1"), Value: []byte("not json " + privateNote)},
		reportRecord(t, newID(), "p1", privateNote), // missing, and Kafka refuses its re-drive
		reportRecord(t, newID(), "p1", privateNote), // missing: re-driven
	)
	f.store(recs[0])
	f.commitAll()
	engine := f.engine(t)
	var missing []reconcile.Exception
	sum, err := engine.Run(t.Context(), reconcile.Range{}, func(x reconcile.Exception) error {
		missing = append(missing, x)
		return nil
	}, nil)
	if err != nil || sum.Missing() != 5 {
		t.Fatalf("run: %+v %v; want 5 missing", sum, err)
	}
	// Behind the run's back: epro-mq stores one, dead-letters another.
	f.store(recs[1])
	f.deadLetter(recs[2], report.ErrorClassPermanent, store.StatusNew)
	notMissing := reconcile.Exception{RequestID: recs[0].requestID, Partition: 0, Offset: recs[0].Offset, Class: reconcile.Stored}
	sender := &recordingSender{refuse: recs[4].requestID}
	rd, err := reconcile.NewRedriver(engine, sender, store.NewAudit(f.db), reconcile.RedriveConf{RatePerSecond: 4, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	outcomes := map[string]reconcile.RedriveOutcome{}
	rs, err := rd.Redrive(t.Context(), reconcile.Actor{Name: "alice", Role: "operator"}, append([]reconcile.Exception{notMissing}, missing...), 2,
		func(x reconcile.Exception, o reconcile.RedriveOutcome, _ string) {
			outcomes[pos(placed{Message: kafka.Message{Partition: x.Partition, Offset: x.Offset}})] = o
		})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]reconcile.RedriveOutcome{
		pos(recs[0]): reconcile.Refused, pos(recs[1]): reconcile.Resolved, pos(recs[2]): reconcile.Resolved,
		pos(recs[3]): reconcile.Refused, pos(recs[4]): reconcile.Failed, pos(recs[5]): reconcile.Redriven,
	}
	for k, o := range want {
		if outcomes[k] != o {
			t.Errorf("record %s: %q, want %q", k, outcomes[k], o)
		}
	}
	if rs != (reconcile.RedriveSummary{Missing: 8, Redriven: 1, Resolved: 2, Refused: 2, Failed: 1, NotTried: 2}) || rs.Remaining() != 5 {
		t.Errorf("summary %+v", rs)
	}
	if len(sender.sent) != 2 || string(sender.sent[1].Value) != string(recs[5].Value) {
		t.Fatalf("sent %d records, want the refused try and the one re-drive", len(sender.sent))
	}
	if gap := sender.at[1].Sub(sender.at[0]); gap < 240*time.Millisecond {
		t.Errorf("two produces %s apart at 4 a second", gap)
	}
	byOutcome := map[string]int{}
	for _, r := range f.audit(store.ActionRedrive) {
		byOutcome[r.Outcome]++
		if r.Actor != "alice" || strings.Contains(r.Reason, "private") {
			t.Errorf("audit row %+v", r)
		}
	}
	if want := map[string]int{store.OutcomeSkipped: 4, store.OutcomeStarted: 2, store.OutcomeFailed: 1, store.OutcomeOK: 1}; !maps(byOutcome, want) {
		t.Errorf("audit outcomes %v, want %v", byOutcome, want)
	}
	// Nothing was written to reports: that is epro-mq's job.
	rows, err := reportdb.Lookup(t.Context(), f.db, []string{recs[5].requestID})
	if err != nil || len(rows) != 0 {
		t.Errorf("a reports row for the re-driven record: %v %v", rows, err)
	}
}

func maps(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// recordingSender keeps what it is asked to send, and refuses the record of one request id.
type recordingSender struct {
	refuse string
	sent   []kafka.Message
	at     []time.Time
}

func (s *recordingSender) Send(_ context.Context, msgs ...kafka.Message) error {
	s.sent = append(s.sent, msgs...)
	s.at = append(s.at, time.Now())
	for _, m := range msgs {
		for _, h := range m.Headers {
			if h.Key == report.HeaderRequestID && string(h.Value) == s.refuse {
				return errors.New("not acknowledged")
			}
		}
	}
	return nil
}

func (f *fixture) engine(t *testing.T) *reconcile.Engine {
	t.Helper()
	engine, err := reconcile.New(reconcile.Conf{Brokers: f.brokers, Topic: f.topic, Group: f.group, BatchSize: 4,
		MaxWait: 200 * time.Millisecond, QueryTimeout: 10 * time.Second}, f.db)
	if err != nil {
		t.Fatal(err)
	}
	return engine
}

// readAt reads the record at partition/offset.
func (f *fixture) readAt(partition int, offset int64) kafka.Message {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: f.brokers, Topic: f.topic, Partition: partition, MaxWait: 200 * time.Millisecond})
	defer r.Close()
	if err := r.SetOffset(offset); err != nil {
		f.t.Fatal(err)
	}
	m, err := r.ReadMessage(ctx)
	if err != nil || m.Offset != offset {
		f.t.Fatalf("read %d@%d: %v (got %d)", partition, offset, err, m.Offset)
	}
	return m
}

// audit returns the audit rows of action, oldest first.
func (f *fixture) audit(action string) []store.AuditEntry {
	f.t.Helper()
	rows, err := f.db.Query("SELECT actor, role, outcome, reason FROM dead_letter_audit WHERE action = ? ORDER BY id", action)
	if err != nil {
		f.t.Fatal(err)
	}
	defer rows.Close()
	var out []store.AuditEntry
	for rows.Next() {
		var e store.AuditEntry
		if err := rows.Scan(&e.Actor, &e.Role, &e.Outcome, &e.Reason); err != nil {
			f.t.Fatal(err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		f.t.Fatal(err)
	}
	return out
}

func pos3(m placed) string { return strings.Replace(pos(m), "@", "/", 1) }
