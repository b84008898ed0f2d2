package replay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/zeromicro/go-zero/core/logx"

	"github.com/epro-intake/dlq-worker/internal/auth"
	"github.com/epro-intake/dlq-worker/internal/store"
)

// ErrJobNotPaused: only a paused job can be resumed.
var ErrJobNotPaused = errors.New("job is not paused")

// ErrNothingToReplay: a bulk replay whose filter matches no new dead letter.
var ErrNothingToReplay = errors.New("no new dead letter matches the filter")

// bulkState holds the jobs of this process. A job's work list lives only here: after a restart the job is
// marked interrupted, and a new job with the same filter takes the dead letters that are still new.
type bulkState struct {
	mu      sync.Mutex
	runs    map[uint64]*jobRun
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	stopped bool
}

func (b *bulkState) init() {
	b.runs = map[uint64]*jobRun{}
	b.ctx, b.cancel = context.WithCancel(context.Background())
}

type jobRun struct {
	principal  auth.Principal
	candidates []store.Candidate
	next       int
	job        store.Job // guarded by bulkState.mu once the run started
}

// DryRun counts the new dead letters f matches (up to MaxItems) and how many of their request ids are
// stored already. storedKnown is false when the reports table is missing.
func (r *Resolver) DryRun(ctx context.Context, f store.Filter) (count, alreadyStored int, storedKnown bool, err error) {
	cands, err := r.dls.Candidates(ctx, f, r.conf.Bulk.MaxItems)
	if err != nil {
		return 0, 0, false, err
	}
	ids := make([]string, 0, len(cands))
	for _, c := range cands {
		ids = append(ids, c.RequestID)
	}
	n, known, err := r.reports.CountStored(ctx, ids)
	if err != nil {
		return 0, 0, false, err
	}
	return len(cands), n, known, nil
}

// StartJob starts a bulk replay of the new dead letters f matches, at rate per second (0: the configured
// default), and returns the job as created.
func (r *Resolver) StartJob(ctx context.Context, p auth.Principal, f store.Filter, rate float64) (store.Job, error) {
	if rate <= 0 {
		rate = r.conf.Bulk.RatePerSecond
	}
	rate = min(rate, r.conf.Bulk.MaxRatePerSecond)
	cands, err := r.dls.Candidates(ctx, f, r.conf.Bulk.MaxItems)
	if err != nil {
		return store.Job{}, err
	}
	if len(cands) == 0 {
		return store.Job{}, ErrNothingToReplay
	}
	job, err := r.jobs.Create(ctx, store.Job{Actor: p.Actor, Filter: f, RatePerSecond: rate, State: store.JobRunning,
		Total: len(cands)})
	if err != nil {
		return store.Job{}, err
	}
	entry := p.Audit(store.ActionBulkReplay)
	entry.Outcome, entry.JobID, entry.Reason = store.OutcomeOK, job.ID, fmt.Sprintf("%d dead letters", len(cands))
	if err := r.audit.Append(ctx, entry); err != nil {
		job.State, job.StateReason = store.JobInterrupted, "audit failed"
		return store.Job{}, errors.Join(err, r.jobs.Save(context.WithoutCancel(ctx), job))
	}
	run := &jobRun{principal: p, candidates: cands, job: job}
	if err := r.launch(run); err != nil {
		return store.Job{}, err
	}
	return job, nil
}

// Job returns job id's progress.
func (r *Resolver) Job(ctx context.Context, id uint64) (store.Job, error) {
	r.bulk.mu.Lock()
	run, ok := r.bulk.runs[id]
	var job store.Job
	if ok {
		job = run.job
	}
	r.bulk.mu.Unlock()
	if ok {
		return job, nil
	}
	return r.jobs.Get(ctx, id)
}

// ResumeJob continues a paused job of this process where it stopped.
func (r *Resolver) ResumeJob(ctx context.Context, p auth.Principal, id uint64) (store.Job, error) {
	r.bulk.mu.Lock()
	run, ok := r.bulk.runs[id]
	if !ok || run.job.State != store.JobPaused {
		r.bulk.mu.Unlock()
		if _, err := r.jobs.Get(ctx, id); err != nil {
			return store.Job{}, err
		}
		return store.Job{}, ErrJobNotPaused
	}
	run.job.State, run.job.StateReason = store.JobRunning, "resumed by "+p.Actor
	// Replays that came back before the pause must not pause it again at once.
	run.job.RedeadLettered = 0
	job := run.job
	r.bulk.mu.Unlock()
	entry := p.Audit(store.ActionBulkReplay)
	entry.Outcome, entry.JobID, entry.Reason = store.OutcomeOK, id, "resumed"
	if err := r.audit.Append(ctx, entry); err != nil {
		return store.Job{}, err
	}
	if err := r.launch(run); err != nil {
		return store.Job{}, err
	}
	return job, nil
}

func (r *Resolver) launch(run *jobRun) error {
	r.bulk.mu.Lock()
	defer r.bulk.mu.Unlock()
	if r.bulk.stopped {
		return errors.New("dlq-worker is stopping")
	}
	r.bulk.runs[run.job.ID] = run
	r.bulk.wg.Add(1)
	go func() {
		defer r.bulk.wg.Done()
		r.runJob(r.bulk.ctx, run)
	}()
	return nil
}

// runJob replays run's candidates at the job's rate until they are all done, the job pauses itself, or the
// process stops.
func (r *Resolver) runJob(ctx context.Context, run *jobRun) {
	interval := time.Duration(float64(time.Second) / run.job.RatePerSecond)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	check := time.NewTicker(r.conf.Bulk.CheckInterval)
	defer check.Stop()
	// Replays that came back before a resume are the baseline; only new ones count against the threshold.
	baseline, _ := r.jobs.CountRedeadLettered(ctx, run.job.ID)
	consecutive := 0
	first := true
	for {
		r.bulk.mu.Lock()
		finished := run.next >= len(run.candidates)
		r.bulk.mu.Unlock()
		if finished {
			r.finish(run, store.JobDone, "all dead letters handled")
			return
		}
		if !first {
			select {
			case <-ctx.Done():
				r.finish(run, store.JobInterrupted, "dlq-worker stopped")
				return
			case <-check.C:
				if r.checkRedeadLettered(ctx, run, baseline) {
					return
				}
				continue
			case <-tick.C:
			}
		}
		first = false
		c := run.candidates[run.next]
		_, err := r.Replay(ctx, run.principal, c.ID, run.job.ID)
		r.bulk.mu.Lock()
		run.next++
		switch {
		case err == nil:
			run.job.Done++
			consecutive = 0
		case errors.Is(err, ErrAlreadyReplayed), errors.Is(err, ErrDiscarded), errors.Is(err, store.ErrNotFound),
			errors.Is(err, ErrConflictNotReplayable):
			// Someone resolved it since the job started, or it is a conflict, which is never replayed: nothing
			// to do, and no sign of trouble.
			run.job.Done++
			run.job.Skipped++
		default:
			if ctx.Err() != nil {
				run.next-- // not attempted for real; a resume takes it again
				r.bulk.mu.Unlock()
				r.finish(run, store.JobInterrupted, "dlq-worker stopped")
				return
			}
			run.job.Failed++
			consecutive++
		}
		job := run.job
		r.bulk.mu.Unlock()
		if consecutive >= r.conf.Bulk.PauseAfterFailures {
			r.pause(run, fmt.Sprintf("%d replays in a row failed", consecutive))
			return
		}
		r.save(job)
	}
}

// checkRedeadLettered pauses the job once enough of its replays came back as dead letters; true if it did.
func (r *Resolver) checkRedeadLettered(ctx context.Context, run *jobRun, baseline int) bool {
	n, err := r.jobs.CountRedeadLettered(ctx, run.job.ID)
	if err != nil {
		logx.Errorf("replay job %d: %v", run.job.ID, err)
		return false
	}
	r.bulk.mu.Lock()
	run.job.RedeadLettered = n - baseline
	back := run.job.RedeadLettered
	r.bulk.mu.Unlock()
	if back >= r.conf.Bulk.PauseAfterRedeadLettered {
		r.pause(run, fmt.Sprintf("%d replays came back as new dead letters", back))
		return true
	}
	return false
}

func (r *Resolver) pause(run *jobRun, reason string) {
	logx.Infof("replay job %d paused: %s", run.job.ID, reason)
	r.bulk.mu.Lock()
	run.job.State, run.job.StateReason = store.JobPaused, reason
	job := run.job
	r.bulk.mu.Unlock()
	r.save(job)
}

func (r *Resolver) finish(run *jobRun, state, reason string) {
	r.bulk.mu.Lock()
	run.job.State, run.job.StateReason = state, reason
	job := run.job
	delete(r.bulk.runs, job.ID)
	r.bulk.mu.Unlock()
	r.save(job)
	logx.Infof("replay job %d %s: %d of %d done, %d failed", job.ID, state, job.Done, job.Total, job.Failed)
}

func (r *Resolver) save(job store.Job) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.jobs.Save(ctx, job); err != nil {
		logx.Errorf("replay job %d: %v", job.ID, err)
	}
}

// Start implements service.Service: jobs run on their own goroutines, so it only waits for Stop.
func (r *Resolver) Start() {
	<-r.bulk.ctx.Done()
}

// Stop ends running jobs (they are saved as interrupted) and waits for them.
func (r *Resolver) Stop() {
	r.bulk.mu.Lock()
	r.bulk.stopped = true
	r.bulk.mu.Unlock()
	r.bulk.cancel()
	r.bulk.wg.Wait()
	// Paused jobs have no goroutine; their work lists end with this process.
	r.bulk.mu.Lock()
	var paused []*jobRun
	for _, run := range r.bulk.runs {
		paused = append(paused, run)
	}
	r.bulk.mu.Unlock()
	for _, run := range paused {
		r.finish(run, store.JobInterrupted, "dlq-worker stopped while the job was paused")
	}
}
