package store_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"slices"
	"testing"
	"testing/fstest"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"github.com/pressly/goose/v3"

	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/common/reportdb/reportdbtest"
	"github.com/epro-intake/dlq-worker/internal/store"
)

func openDB(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", infratest.MySQL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := store.Migrate(ctx, db); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return db
}

func ptr[T any](v T) *T { return &v }

func sample(offset int64, class, trial, patient string, at time.Time) store.DeadLetter {
	return store.DeadLetter{
		DLQTopic: "dlq", DLQPartition: 1, DLQOffset: offset, DeadLetteredAt: at,
		Key: []byte(patient), Value: []byte(`{"answers":{"secret":1}}`),
		Headers: []store.Header{
			store.NewHeader("x-request-id", []byte("r")), store.NewHeader("bin", []byte{0xff, 0x00}),
		},
		OriginalTopic: "epro.reports.v1", OriginalPartition: ptr(3), OriginalOffset: ptr(int64(42)),
		OriginalTimestamp: ptr(at.Add(-time.Minute)), OriginalGroup: "epro-mq",
		ErrorClass: class, ErrorMessage: "boom", Attempts: 5,
		FirstFailure: ptr(at.Add(-30 * time.Second)), LastFailure: ptr(at.Add(-time.Second)),
		RequestID: "req-" + patient, PatientID: patient, TrialID: trial,
	}
}

// epro-mq migrates the same database with goose's default version table; dlq-worker must not mistake that
// table's version 1 for its own.
func TestMigrateNextToAnotherServicesGoose(t *testing.T) {
	db, err := sql.Open("mysql", infratest.MySQL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	other := fstest.MapFS{"00001_other.sql": {Data: []byte("-- +goose Up\nCREATE TABLE other_service (id INT PRIMARY KEY);\n-- +goose Down\nDROP TABLE other_service;\n")}}
	p, err := goose.NewProvider(goose.DialectMySQL, db, other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // the second run finds nothing to do
		if err := store.Migrate(ctx, db); err != nil {
			t.Fatalf("migrate run %d: %v", i+1, err)
		}
	}
	for _, table := range []string{"dead_letters", "dead_letter_audit", "replay_jobs", "other_service"} {
		if _, err := db.ExecContext(ctx, "SELECT COUNT(*) FROM "+table); err != nil {
			t.Errorf("table %s: %v", table, err)
		}
	}
}

func TestInsertIsIdempotentOnDLQPosition(t *testing.T) {
	db := openDB(t)
	s := store.NewDeadLetters(db)
	ctx := context.Background()
	at := time.Date(2026, 5, 6, 7, 8, 9, 123456789, time.UTC)
	dl := sample(10, "poison", "T1", "P1", at)
	id, inserted, err := s.Insert(ctx, dl)
	if err != nil || !inserted || id == 0 {
		t.Fatalf("first insert = %d, %v, %v", id, inserted, err)
	}
	dl.ErrorMessage = "changed"
	id2, inserted, err := s.Insert(ctx, dl)
	if err != nil || inserted || id2 != id {
		t.Fatalf("second insert = %d, %v, %v; want %d, false, nil", id2, inserted, err, id)
	}
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM dead_letters").Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows = %d, %v", n, err)
	}
	got, err := s.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got.ErrorMessage != "boom" || got.Status != store.StatusNew {
		t.Errorf("re-read record changed the row: %+v", got)
	}
	if !bytes.Equal(got.Value, dl.Value) || string(got.Key) != "P1" {
		t.Errorf("value/key = %q/%q", got.Value, got.Key)
	}
	if len(got.Headers) != 2 || !got.Headers[1].Base64 {
		t.Fatalf("headers = %+v", got.Headers)
	}
	if b, _ := got.Headers[1].Bytes(); !bytes.Equal(b, []byte{0xff, 0x00}) {
		t.Errorf("binary header = %x", b)
	}
	if !got.DeadLetteredAt.Equal(at.Truncate(time.Microsecond)) || got.DeadLetteredAt.Location() != time.UTC {
		t.Errorf("dead_lettered_at = %v", got.DeadLetteredAt)
	}
	if got.OriginalTopic != "epro.reports.v1" || *got.OriginalPartition != 3 || *got.OriginalOffset != 42 ||
		got.OriginalGroup != "epro-mq" || got.Attempts != 5 || got.LastFailure == nil || got.RequestID != "req-P1" ||
		got.TrialID != "T1" || got.PatientID != "P1" || got.ReplayOf != nil {
		t.Errorf("metadata = %+v", got)
	}
	if _, err := s.Get(ctx, id+1000); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get(unknown) = %v", err)
	}
}

func TestListFiltersPagesNewestFirst(t *testing.T) {
	db := openDB(t)
	s := store.NewDeadLetters(db)
	ctx := context.Background()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var ids []uint64
	for i := 0; i < 7; i++ {
		class := "poison"
		if i%2 == 1 {
			class = "permanent"
		}
		trial := "T1"
		if i >= 5 {
			trial = "T2"
		}
		id, _, err := s.Insert(ctx, sample(int64(i), class, trial, "P"+string(rune('a'+i)), base.Add(time.Duration(i)*time.Hour)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	page, err := s.List(ctx, store.Filter{}, 0, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 3 || page[0].ID != ids[6] || page[2].ID != ids[4] {
		t.Fatalf("first page = %v", idsOf(page))
	}
	if page[0].Value != nil {
		t.Error("List read the record value")
	}
	page, err = s.List(ctx, store.Filter{}, page[2].ID, 3)
	if err != nil || len(page) != 3 || page[0].ID != ids[3] {
		t.Fatalf("second page = %v, %v", idsOf(page), err)
	}
	for _, tc := range []struct {
		name string
		f    store.Filter
		want []uint64
	}{
		{"class", store.Filter{ErrorClass: "permanent"}, []uint64{ids[5], ids[3], ids[1]}},
		{"trial", store.Filter{TrialID: "T2"}, []uint64{ids[6], ids[5]}},
		{"patient", store.Filter{PatientID: "Pc"}, []uint64{ids[2]}},
		{"time range", store.Filter{From: base.Add(2 * time.Hour), To: base.Add(4 * time.Hour)}, []uint64{ids[3], ids[2]}},
		{"status", store.Filter{Status: store.StatusReplayed}, nil},
	} {
		got, err := s.List(ctx, tc.f, 0, 100)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if g := idsOf(got); !equal(g, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, g, tc.want)
		}
	}
	cands, err := s.Candidates(ctx, store.Filter{TrialID: "T1"}, 2)
	if err != nil || len(cands) != 2 || cands[0].ID != ids[0] || cands[0].RequestID != "req-Pa" {
		t.Fatalf("candidates = %+v, %v", cands, err)
	}
}

func TestResolveStatsAndAudit(t *testing.T) {
	db := openDB(t)
	s := store.NewDeadLetters(db)
	audit := store.NewAudit(db)
	ctx := context.Background()
	old := time.Now().Add(-2 * time.Hour).UTC()
	a, _, _ := s.Insert(ctx, sample(1, "poison", "T", "P1", old))
	b, _, _ := s.Insert(ctx, sample(2, "permanent", "T", "P2", time.Now()))
	c, _, _ := s.Insert(ctx, sample(3, "permanent", "T", "P3", time.Now()))

	r, err := s.Lock(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.MarkReplayed(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := r.Audit(ctx, store.AuditEntry{Actor: "alice", Role: "operator", Action: store.ActionReplay, Outcome: store.OutcomeOK, DeadLetterID: b}); err != nil {
		t.Fatal(err)
	}
	if err := r.Commit(); err != nil {
		t.Fatal(err)
	}
	r, err = s.Lock(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	_ = r.MarkDiscarded(ctx, "bob", "duplicate")
	r.Rollback() // nothing changes without Commit
	if got, _ := s.Get(ctx, c); got.Status != store.StatusNew {
		t.Fatalf("rolled back discard left status %s", got.Status)
	}
	if _, err := s.Lock(ctx, 99999); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Lock(unknown) = %v", err)
	}

	got, _ := s.Get(ctx, b)
	if got.Status != store.StatusReplayed || got.ResolvedBy != "alice" || got.ResolvedAt == nil {
		t.Fatalf("replayed row = %+v", got)
	}
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Unresolved() != 2 || st.ByStatus[store.StatusReplayed] != 1 || st.ByClass["permanent"][store.StatusNew] != 1 || st.ByClass["poison"][store.StatusNew] != 1 {
		t.Fatalf("stats = %+v", st)
	}
	if st.OldestNew == nil || !st.OldestNew.Equal(old.Truncate(time.Microsecond)) {
		t.Fatalf("oldest new = %v, want %v", st.OldestNew, old)
	}
	if err := audit.Append(ctx, store.AuditEntry{Actor: "carol", Role: "operator", Action: store.ActionReveal, Outcome: store.OutcomeOK, DeadLetterID: a}); err != nil {
		t.Fatal(err)
	}
	trail, err := audit.ForDeadLetter(ctx, b)
	if err != nil || len(trail) != 1 || trail[0].Actor != "alice" || trail[0].Action != store.ActionReplay || trail[0].At.IsZero() {
		t.Fatalf("trail of b = %+v, %v", trail, err)
	}
}

func TestReportsStoredToleratesMissingTable(t *testing.T) {
	db := openDB(t)
	r := store.NewReports(db)
	ctx := context.Background()
	_, known, err := r.Stored(ctx, []string{"a"})
	if err != nil || known {
		t.Fatalf("without reports table: known=%v err=%v", known, err)
	}
	// The reports table as epro-mq's migrations create it, next to dlq-worker's own tables.
	reportdbtest.Migrate(t, db)
	reportdbtest.Insert(t, db, reportdbtest.Row{RequestID: "a"}, reportdbtest.Row{RequestID: "c"})
	stored, known, err := r.Stored(ctx, []string{"a", "b", "c", ""})
	if err != nil || !known || len(stored) != 2 || !stored["a"] || !stored["c"] {
		t.Fatalf("stored = %v, known=%v, err=%v", stored, known, err)
	}
}

func TestJobsCountRedeadLettered(t *testing.T) {
	db := openDB(t)
	s := store.NewDeadLetters(db)
	jobs := store.NewJobs(db)
	audit := store.NewAudit(db)
	ctx := context.Background()
	a, _, _ := s.Insert(ctx, sample(1, "permanent", "T", "P1", time.Now()))
	other, _, _ := s.Insert(ctx, sample(2, "permanent", "T", "P2", time.Now()))
	j, err := jobs.Create(ctx, store.Job{Actor: "alice", Filter: store.Filter{TrialID: "T"}, RatePerSecond: 5},
		[]uint64{a, other}, store.AuditEntry{Actor: "alice", Role: "operator", Action: store.ActionBulkReplay, Outcome: store.OutcomeOK})
	if err != nil {
		t.Fatal(err)
	}
	_ = audit.Append(ctx, store.AuditEntry{Actor: "alice", Role: "operator", Action: store.ActionReplay, Outcome: store.OutcomeOK, DeadLetterID: a, JobID: j.ID})
	again := sample(3, "permanent", "T", "P1", time.Now())
	again.ReplayOf = &a
	_, _, _ = s.Insert(ctx, again)
	unrelated := sample(4, "permanent", "T", "P2", time.Now())
	unrelated.ReplayOf = &other // replayed by hand, not by the job
	_, _, _ = s.Insert(ctx, unrelated)
	if n, err := jobs.CountRedeadLettered(ctx, j.ID); err != nil || n != 1 {
		t.Fatalf("re-dead-lettered = %d, %v; want 1", n, err)
	}
	got, err := jobs.Get(ctx, j.ID)
	if err != nil || got.State != store.JobRunning || got.Total != 2 || got.Done != 0 || got.Filter.TrialID != "T" || got.RatePerSecond != 5 {
		t.Fatalf("job = %+v, %v", got, err)
	}
	if started, _ := audit.ForJob(ctx, j.ID); len(started) != 2 || started[0].Action != store.ActionBulkReplay {
		t.Fatalf("the job's start is not audited with it: %+v", started)
	}
}

// A job runs under one lease at a time: a second replica cannot claim it while the lease lives, the holder
// loses it to a pause, and an expired lease is taken over.
func TestJobsLease(t *testing.T) {
	db := openDB(t)
	s := store.NewDeadLetters(db)
	jobs := store.NewJobs(db)
	ctx := context.Background()
	a, _, _ := s.Insert(ctx, sample(1, "permanent", "T", "P1", time.Now()))
	b, _, _ := s.Insert(ctx, sample(2, "permanent", "T", "P2", time.Now()))
	op := store.AuditEntry{Actor: "alice", Role: "operator", Action: store.ActionBulkReplay, Outcome: store.OutcomeOK}
	j, err := jobs.Create(ctx, store.Job{Actor: "alice", RatePerSecond: 5}, []uint64{b, a}, op)
	if err != nil {
		t.Fatal(err)
	}
	got, ok, err := jobs.Claim(ctx, "one", time.Minute)
	if err != nil || !ok || got.ID != j.ID || got.LeaseOwner != "one" {
		t.Fatalf("claim = %+v, %v, %v", got, ok, err)
	}
	if _, ok, err := jobs.Claim(ctx, "two", time.Minute); err != nil || ok {
		t.Fatalf("a second replica claimed a leased job: %v, %v", ok, err)
	}
	it, ok, err := jobs.Next(ctx, j.ID, "one", time.Minute)
	if err != nil || !ok || it.Seq != 0 || it.DeadLetterID != b || it.State != store.ItemPending {
		t.Fatalf("next = %+v, %v, %v", it, ok, err)
	}
	if _, _, err := jobs.Next(ctx, j.ID, "two", time.Minute); !errors.Is(err, store.ErrNotOwner) {
		t.Fatalf("next by a non-owner = %v", err)
	}
	if err := jobs.MarkSending(ctx, it, "one", time.Minute, map[int]int64{0: 12, 1: 7}); err != nil {
		t.Fatal(err)
	}
	if again, _, _ := jobs.Next(ctx, j.ID, "one", time.Minute); again.State != store.ItemSending || again.Probe[0] != 12 || again.Probe[1] != 7 {
		t.Fatalf("sending item = %+v", again)
	}
	if err := jobs.Transition(ctx, j.ID, []string{store.JobRunning}, store.JobPaused, "paused by bob", 0,
		store.AuditEntry{Actor: "bob", Role: "operator", Action: store.ActionJobPause, Outcome: store.OutcomeOK}); err != nil {
		t.Fatal(err)
	}
	if err := jobs.MarkSending(ctx, store.Item{JobID: j.ID, Seq: 1}, "one", time.Minute, map[int]int64{0: 1}); !errors.Is(err, store.ErrNotOwner) {
		t.Fatalf("mark sending in a paused job = %v", err)
	}
	if err := jobs.Transition(ctx, j.ID, []string{store.JobRunning}, store.JobPaused, "", 0, store.AuditEntry{}); !errors.Is(err, store.ErrJobState) {
		t.Fatalf("pause of a paused job = %v", err)
	}
	if err := jobs.Transition(ctx, j.ID, []string{store.JobPaused}, store.JobRunning, "resumed", 0,
		store.AuditEntry{Actor: "bob", Role: "operator", Action: store.ActionJobResume, Outcome: store.OutcomeOK}); err != nil {
		t.Fatal(err)
	}
	// "one" still holds a live lease; once it has expired, "two" takes the job.
	if err := jobs.Renew(ctx, j.ID, "one", time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if got, ok, err := jobs.Claim(ctx, "two", time.Minute); err != nil || !ok || got.LeaseOwner != "two" {
		t.Fatalf("claim of an expired lease = %+v, %v, %v", got, ok, err)
	}
	if err := jobs.Renew(ctx, j.ID, "one", time.Minute); !errors.Is(err, store.ErrNotOwner) {
		t.Fatalf("renew by the old owner = %v", err)
	}
	if err := jobs.Stop(ctx, j.ID, "two", store.JobDone, "finished"); err != nil {
		t.Fatal(err)
	}
	if got, _ := jobs.Get(ctx, j.ID); got.State != store.JobDone || got.LeaseOwner != "" {
		t.Fatalf("stopped job = %+v", got)
	}
	trail, _ := store.NewAudit(db).ForJob(ctx, j.ID)
	var actions []string
	for _, e := range trail {
		actions = append(actions, e.Action)
	}
	if want := []string{store.ActionBulkReplay, store.ActionJobPause, store.ActionJobResume}; !slices.Equal(actions, want) {
		t.Fatalf("job audit = %v, want %v", actions, want)
	}
}

func idsOf(dls []store.DeadLetter) []uint64 {
	var out []uint64
	for _, d := range dls {
		out = append(out, d.ID)
	}
	return out
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
