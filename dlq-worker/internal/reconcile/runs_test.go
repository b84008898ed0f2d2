package reconcile_test

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/epro-intake/common/reportdb/reportdbtest"
	"github.com/epro-intake/dlq-worker/internal/reconcile"
	"github.com/epro-intake/dlq-worker/internal/store"
)

// One API run at a time: a second start while the first runs is refused; Stop ends the run, which is then
// failed, and its closing audit row is written.
func TestRunsOneAtATime(t *testing.T) {
	// A broker that accepts connections and never answers keeps a run busy until it is stopped.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	db, _ := reportdbtest.Open(t)
	if err := store.Migrate(t.Context(), db); err != nil {
		t.Fatal(err)
	}
	engine, err := reconcile.New(reconcile.Conf{Brokers: []string{ln.Addr().String()}, Topic: "t", Group: "g",
		BatchSize: 10, MaxWait: time.Second, QueryTimeout: time.Minute}, db)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := reconcile.NewRedriver(engine, &recordingSender{}, store.NewAudit(db), reconcile.RedriveConf{RatePerSecond: 1, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	runs, err := reconcile.NewRuns(engine, store.NewAudit(db), rd, reconcile.RunsConf{Timeout: time.Hour, MaxExceptions: 10, MaxRedrive: 10})
	if err != nil {
		t.Fatal(err)
	}
	who := reconcile.Actor{Name: "alice", Role: "reviewer"}
	first, err := runs.Begin(who, reconcile.Range{})
	if err != nil || first.State != reconcile.StateRunning {
		t.Fatalf("first run: %+v %v", first, err)
	}
	if _, err := runs.Begin(who, reconcile.Range{}); !errors.Is(err, reconcile.ErrBusy) {
		t.Fatalf("second run while the first runs: %v, want ErrBusy", err)
	}
	if _, err := runs.Redrive(who, first.ID); !errors.Is(err, reconcile.ErrBusy) {
		t.Fatalf("re-drive while the run runs: %v, want ErrBusy", err)
	}
	runs.Stop()
	// A failed run's missing list may be partial: it is not re-driven.
	if _, err := runs.Redrive(who, first.ID); !errors.Is(err, reconcile.ErrNotRedrivable) {
		t.Fatalf("re-drive of the stopped run: %v, want ErrNotRedrivable", err)
	}
	if _, err := runs.Redrive(who, first.ID+1); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("re-drive of no such run: %v, want ErrNotFound", err)
	}
	got, err := runs.Get(first.ID)
	if err != nil || got.State != reconcile.StateFailed || got.Error == "" || got.FinishedAt.IsZero() {
		t.Fatalf("stopped run: %+v %v", got, err)
	}
	var outcomes []string
	rows, err := db.Query("SELECT outcome FROM dead_letter_audit WHERE action = ? ORDER BY id", store.ActionReconcile)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var o string
		if err := rows.Scan(&o); err != nil {
			t.Fatal(err)
		}
		outcomes = append(outcomes, o)
	}
	if len(outcomes) != 2 || outcomes[0] != store.OutcomeStarted || outcomes[1] != store.OutcomeFailed {
		t.Errorf("audit outcomes %v, want started, failed", outcomes)
	}
	if _, err := runs.Begin(who, reconcile.Range{}); err != nil { // a finished run does not block the next
		t.Errorf("a run after the stopped one: %v", err)
	}
	runs.Stop()
}
