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

// Errors of Runs.
var (
	// ErrBusy is returned by Runs.Begin and Runs.Redrive while a run or a re-drive is going on.
	ErrBusy = errors.New("a reconciliation is running")
	// ErrNotRedrivable: the run is not done (still running, or failed: its missing list may be partial), or
	// its missing records were re-driven already. A new run finds what is still missing.
	ErrNotRedrivable = errors.New("the run is not done, or was re-driven already")
)

// RedriveState is the re-drive of a run's missing records, started through the API.
type RedriveState struct {
	Actor      Actor
	State      string
	StartedAt  time.Time
	FinishedAt time.Time
	Error      string
	Summary    RedriveSummary
}

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
	// Redrive is the re-drive of the run's missing records, once one was started.
	Redrive *RedriveState

	// missing are the first maxRedrive missing records, for a re-drive; notKept counts the others.
	missing []Exception
	notKept int64
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
	redriver      *Redriver
	timeout       time.Duration
	maxExceptions int
	maxRedrive    int

	mu      sync.Mutex
	latest  *RunState
	nextID  uint64
	cancel  context.CancelFunc
	running sync.WaitGroup
}

// RunsConf bounds the API's runs: Timeout each run and each re-drive, MaxExceptions the exceptions a run
// keeps for GET, MaxRedrive the missing records it keeps for a re-drive. All must be positive.
type RunsConf struct {
	Timeout       time.Duration
	MaxExceptions int
	MaxRedrive    int
}

// NewRuns returns the API's runner; redriver re-drives the missing records of its runs.
func NewRuns(engine *Engine, audit *store.Audit, redriver *Redriver, c RunsConf) (*Runs, error) {
	if engine == nil || audit == nil || redriver == nil || c.Timeout <= 0 || c.MaxExceptions <= 0 || c.MaxRedrive <= 0 {
		return nil, errors.New("reconcile: runs need an engine, the audit trail, a redriver, Timeout, MaxExceptions and MaxRedrive")
	}
	return &Runs{engine: engine, audit: audit, redriver: redriver, timeout: c.Timeout, maxExceptions: c.MaxExceptions,
		maxRedrive: c.MaxRedrive}, nil
}

// Begin starts a run for who over r, or returns ErrBusy. The run's first audit row is written before it
// returns (a run that cannot be audited does not start); it returns the run as started.
func (rs *Runs) Begin(who Actor, r Range) (RunState, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.busy() {
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
			if x.Class == Missing {
				if len(st.missing) < rs.maxRedrive {
					st.missing = append(st.missing, x)
				} else {
					st.notKept++
				}
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

// busy reports, under rs.mu, whether a run or a re-drive is going on.
func (rs *Runs) busy() bool {
	l := rs.latest
	return l != nil && (l.State == StateRunning || (l.Redrive != nil && l.Redrive.State == StateRunning))
}

// Redrive starts, for who, the re-drive of the missing records of run id, which must be the latest, done,
// and not re-driven before; it runs in the background, bounded by the runs' timeout, and returns the run as
// it starts. Meanwhile no run starts (ErrBusy).
func (rs *Runs) Redrive(who Actor, id uint64) (RunState, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	st := rs.latest
	switch {
	case st == nil || st.ID != id:
		return RunState{}, store.ErrNotFound
	case rs.busy():
		return RunState{}, ErrBusy
	case st.State != StateDone || st.Redrive != nil:
		return RunState{}, ErrNotRedrivable
	}
	rd := &RedriveState{Actor: who, State: StateRunning, StartedAt: time.Now().UTC(),
		Summary: RedriveSummary{Missing: int64(len(st.missing)) + st.notKept}}
	st.Redrive = rd
	missing, notKept := st.missing, st.notKept
	ctx, cancel := context.WithTimeout(context.Background(), rs.timeout)
	rs.cancel = cancel
	rs.running.Add(1)
	go func() {
		defer rs.running.Done()
		defer cancel()
		sum, err := rs.redriver.Redrive(ctx, who, missing, notKept, func(_ Exception, o RedriveOutcome, _ string) {
			rs.mu.Lock()
			defer rs.mu.Unlock()
			rd.Summary.Add(o)
		})
		rs.mu.Lock()
		defer rs.mu.Unlock()
		rd.Summary, rd.FinishedAt, rd.State = sum, time.Now().UTC(), StateDone
		if err != nil {
			rd.State, rd.Error = StateFailed, err.Error()
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
	c.missing = nil
	if st.Redrive != nil {
		rd := *st.Redrive
		c.Redrive = &rd
	}
	c.Exceptions = append([]Exception(nil), st.Exceptions...)
	c.Progress.Partitions = append([]PartitionProgress(nil), st.Progress.Partitions...)
	return c
}

// Start does nothing: runs start on request.
func (rs *Runs) Start() {}

// Stop cancels a run or re-drive in progress and waits until its last audit row is written.
func (rs *Runs) Stop() {
	rs.mu.Lock()
	if rs.cancel != nil {
		rs.cancel()
	}
	rs.mu.Unlock()
	rs.running.Wait()
}
