package reconcile

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/epro-intake/dlq-worker/internal/store"
)

// States of a run started through the API.
const (
	StateRunning = "running"
	StateDone    = "done"
	StateFailed  = "failed"
)

// ErrBusy is returned by Runs.Begin while a run is going on.
var ErrBusy = errors.New("a reconciliation is running")

// RunState is a run started through the API, as GET shows it: its progress while it runs, its summary and
// its first exceptions once done.
type RunState struct {
	ID         uint64
	Actor      Actor
	Range      Range
	State      string
	StartedAt  time.Time
	FinishedAt time.Time
	Error      string
	Progress   Progress
	Summary    Summary
	// Exceptions are the first MaxExceptions; Summary.Exceptions counts them all.
	Exceptions []Exception
}

// Truncated reports whether exceptions were left out of s.Exceptions.
func (s RunState) Truncated() bool { return s.Summary.Exceptions > int64(len(s.Exceptions)) }

// Runs runs reconciliations for the API: one at a time, in the background, each bounded by a timeout,
// keeping only the latest run (in memory: a restart forgets it, and the audit trail keeps its counts).
// It is a go-zero service: Stop cancels a run in progress and waits for it, so its last audit row is
// written.
type Runs struct {
	engine        *Engine
	audit         *store.Audit
	timeout       time.Duration
	maxExceptions int

	mu      sync.Mutex
	latest  *RunState
	nextID  uint64
	cancel  context.CancelFunc
	running sync.WaitGroup
}

// NewRuns returns the API's runner. timeout and maxExceptions must be positive.
func NewRuns(engine *Engine, audit *store.Audit, timeout time.Duration, maxExceptions int) (*Runs, error) {
	if engine == nil || audit == nil || timeout <= 0 || maxExceptions <= 0 {
		return nil, errors.New("reconcile: runs need an engine, the audit trail, a timeout and maxExceptions")
	}
	return &Runs{engine: engine, audit: audit, timeout: timeout, maxExceptions: maxExceptions}, nil
}

// Begin starts a run for who over r, or returns ErrBusy. The run's first audit row is written before it
// returns (a run that cannot be audited does not start); it returns the run as started.
func (rs *Runs) Begin(who Actor, r Range) (RunState, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.latest != nil && rs.latest.State == StateRunning {
		return RunState{}, ErrBusy
	}
	if err := rs.engine.auditStart(context.Background(), rs.audit, who, r); err != nil {
		return RunState{}, err
	}
	rs.nextID++
	st := &RunState{ID: rs.nextID, Actor: who, Range: r, State: StateRunning, StartedAt: time.Now().UTC()}
	rs.latest = st
	ctx, cancel := context.WithTimeout(context.Background(), rs.timeout)
	rs.cancel = cancel
	rs.running.Add(1)
	go func() {
		defer rs.running.Done()
		defer cancel()
		sum, err := rs.engine.Run(ctx, r, func(x Exception) error {
			rs.mu.Lock()
			defer rs.mu.Unlock()
			if len(st.Exceptions) < rs.maxExceptions {
				st.Exceptions = append(st.Exceptions, x)
			}
			return nil
		}, func(p Progress) {
			rs.mu.Lock()
			defer rs.mu.Unlock()
			st.Progress = p
		})
		err = rs.engine.auditEnd(ctx, rs.audit, who, sum, err)
		rs.mu.Lock()
		defer rs.mu.Unlock()
		st.Summary, st.FinishedAt, st.State = sum, time.Now().UTC(), StateDone
		if err != nil {
			st.State, st.Error = StateFailed, err.Error()
		}
	}()
	return rs.copyOf(st), nil
}

// Latest returns the latest run, if any.
func (rs *Runs) Latest() (RunState, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.latest == nil {
		return RunState{}, false
	}
	return rs.copyOf(rs.latest), true
}

// Get returns run id if it is the latest; older runs are forgotten (store.ErrNotFound).
func (rs *Runs) Get(id uint64) (RunState, error) {
	st, ok := rs.Latest()
	if !ok || st.ID != id {
		return RunState{}, store.ErrNotFound
	}
	return st, nil
}

// copyOf copies st under rs.mu, so callers can read it while the run goes on.
func (rs *Runs) copyOf(st *RunState) RunState {
	c := *st
	c.Exceptions = append([]Exception(nil), st.Exceptions...)
	c.Progress.Partitions = append([]PartitionProgress(nil), st.Progress.Partitions...)
	return c
}

// Start does nothing: runs start on request.
func (rs *Runs) Start() {}

// Stop cancels a run in progress and waits until its last audit row is written.
func (rs *Runs) Stop() {
	rs.mu.Lock()
	if rs.cancel != nil {
		rs.cancel()
	}
	rs.mu.Unlock()
	rs.running.Wait()
}
