package replay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/zeromicro/go-zero/core/logx"

	"github.com/epro-intake/dlq-worker/internal/auth"
	"github.com/epro-intake/dlq-worker/internal/store"
)

// ErrJobState: a pause of a job that is not running, a resume of one that is not paused, or a cancel of one
// that is neither.
var ErrJobState = store.ErrJobState

// ErrNothingToReplay: a bulk replay whose filter matches no new dead letter.
var ErrNothingToReplay = errors.New("no new dead letter matches the filter")

// Bulk jobs are durable. A job's dead letters are frozen in replay_job_items when it is created, and each
// item's state changes in the transaction that changes its dead letter. Any replica runs a running job whose
// lease (replay_jobs.lease_owner, lease_until: the database's clock) is free or expired, renewing it while it
// works; after a restart the job therefore resumes by itself, where it stopped. Pause and cancel are state
// changes in MySQL that the lease holder sees before its next item: an item is sent only after MarkSending
// renewed the lease with one conditional UPDATE that requires the job to be running under it, so a pause
// answered before that renewal stops the item, and one answered after it lets that one item finish.
//
// Exactly once per item: before the produce, the item is marked sending with the end offsets of the target
// topic's partitions (its probe). An item found sending (the process died, or the produce's outcome is not
// known) is settled by reading the topic from its probe for a record whose x-replay-of names its dead letter:
// found, the dead letter is marked replayed without sending; not found, it is sent. The lease outlives a
// produce (LeaseTTL > Timeout), so no other replica reads the topic while a produce may still land.
type bulkState struct {
	owner   string
	mu      sync.Mutex
	running map[uint64]bool
	ctx     context.Context
	cancel  context.CancelFunc
	wake    chan struct{}
	wg      sync.WaitGroup
	stopped bool
}

func (b *bulkState) init() {
	host, _ := os.Hostname()
	var id [6]byte
	_, _ = rand.Read(id[:])
	b.owner = host + "/" + hex.EncodeToString(id[:])
	b.running = map[uint64]bool{}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.wake = make(chan struct{}, 1)
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

// StartJob creates a bulk replay of the new dead letters f matches (oldest first, up to MaxItems) at rate
// per second (0: the configured default), audited in the same transaction, and returns it. A runner picks
// it up at once.
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
	ids := make([]uint64, len(cands))
	for i, c := range cands {
		ids[i] = c.ID
	}
	job, err := r.jobs.Create(ctx, store.Job{Actor: p.Actor, Filter: f, RatePerSecond: rate}, ids,
		p.AuditOf(store.ActionBulkReplay, store.OutcomeOK, fmt.Sprintf("%d dead letters at %g per second", len(ids), rate)))
	if err != nil {
		return store.Job{}, err
	}
	r.kick()
	return job, nil
}

// Job returns job id's progress.
func (r *Resolver) Job(ctx context.Context, id uint64) (store.Job, error) {
	return r.jobs.Get(ctx, id)
}

// PauseJob pauses a running job: no item starts after it returns (one already being sent finishes).
func (r *Resolver) PauseJob(ctx context.Context, p auth.Principal, id uint64) (store.Job, error) {
	return r.transition(ctx, p, id, store.ActionJobPause, []string{store.JobRunning}, store.JobPaused, "paused by "+p.Actor, 0)
}

// ResumeJob continues a paused job where it stopped, on whichever replica takes its lease.
func (r *Resolver) ResumeJob(ctx context.Context, p auth.Principal, id uint64) (store.Job, error) {
	// Replays that came back before the resume must not pause it again at once.
	baseline, err := r.jobs.CountRedeadLettered(ctx, id)
	if err != nil {
		return store.Job{}, err
	}
	job, err := r.transition(ctx, p, id, store.ActionJobResume, []string{store.JobPaused}, store.JobRunning,
		"resumed by "+p.Actor, baseline)
	if err == nil {
		r.kick()
	}
	return job, err
}

// CancelJob ends a running or paused job; its items not yet replayed stay pending and their dead letters new.
func (r *Resolver) CancelJob(ctx context.Context, p auth.Principal, id uint64) (store.Job, error) {
	return r.transition(ctx, p, id, store.ActionJobCancel, []string{store.JobRunning, store.JobPaused},
		store.JobCancelled, "cancelled by "+p.Actor, 0)
}

func (r *Resolver) transition(ctx context.Context, p auth.Principal, id uint64, action string, from []string,
	to, reason string, baseline int) (store.Job, error) {
	entry := p.Audit(action)
	entry.Outcome = store.OutcomeOK
	err := r.jobs.Transition(ctx, id, from, to, reason, baseline, entry)
	if errors.Is(err, store.ErrJobState) {
		entry.Outcome, entry.JobID = store.OutcomeConflict, id
		return store.Job{}, errors.Join(err, r.audit.Append(ctx, entry))
	}
	if err != nil {
		return store.Job{}, err
	}
	logx.WithContext(ctx).Infof("replay job %d %s by %s", id, to, p.Actor)
	return r.jobs.Get(ctx, id)
}

// kick makes the runner look for jobs now rather than at its next poll.
func (r *Resolver) kick() {
	select {
	case r.bulk.wake <- struct{}{}:
	default:
	}
}

// Start implements service.Service: it takes the lease of running jobs no live replica holds, every
// PollInterval and when kicked, and runs each on its own goroutine until Stop.
func (r *Resolver) Start() {
	ctx := r.bulk.ctx
	poll := time.NewTicker(r.conf.Bulk.PollInterval)
	defer poll.Stop()
	for {
		r.claimAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-r.bulk.wake:
		case <-poll.C:
		}
	}
}

func (r *Resolver) claimAll(ctx context.Context) {
	for ctx.Err() == nil {
		r.bulk.mu.Lock()
		full := len(r.bulk.running) >= r.conf.Bulk.MaxConcurrentJobs
		r.bulk.mu.Unlock()
		if full {
			return
		}
		job, ok, err := r.jobs.Claim(ctx, r.bulk.owner, r.conf.Bulk.LeaseTTL)
		if err != nil {
			if ctx.Err() == nil {
				logx.Errorf("bulk replay: %v", err)
			}
			return
		}
		if !ok {
			return
		}
		r.bulk.mu.Lock()
		if r.bulk.stopped {
			r.bulk.mu.Unlock()
			r.release(job.ID)
			return
		}
		r.bulk.running[job.ID] = true
		r.bulk.wg.Add(1)
		r.bulk.mu.Unlock()
		logx.Infof("replay job %d taken by %s: %d of %d done", job.ID, r.bulk.owner, job.Done+job.Failed, job.Total)
		go func() {
			defer r.bulk.wg.Done()
			defer r.kick() // a slot is free
			defer func() {
				r.bulk.mu.Lock()
				delete(r.bulk.running, job.ID)
				r.bulk.mu.Unlock()
			}()
			defer r.release(job.ID)
			r.runJob(ctx, job)
		}()
	}
}

func (r *Resolver) release(id uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.jobs.Release(ctx, id, r.bulk.owner); err != nil {
		logx.Errorf("replay job %d: %v", id, err)
	}
}

// Stop ends the runners (an item being sent is finished first, so nothing is left half done by a graceful
// stop) and releases their leases, so the next process or another replica continues at once.
func (r *Resolver) Stop() {
	r.bulk.mu.Lock()
	r.bulk.stopped = true
	r.bulk.mu.Unlock()
	r.bulk.cancel()
	r.bulk.wg.Wait()
}

// runJob replays job's items at its rate while it runs under this replica's lease.
func (r *Resolver) runJob(ctx context.Context, job store.Job) {
	p := auth.Principal{Actor: job.Actor, Role: auth.RoleOperator}
	interval := time.Duration(float64(time.Second) / job.RatePerSecond)
	check := time.NewTicker(r.conf.Bulk.CheckInterval)
	defer check.Stop()
	var last time.Time
	consecutive := 0
	for ctx.Err() == nil {
		item, ok, err := r.jobs.Next(ctx, job.ID, r.bulk.owner, r.conf.Bulk.LeaseTTL)
		switch {
		case errors.Is(err, store.ErrNotOwner), errors.Is(err, store.ErrNotFound), ctx.Err() != nil:
			return
		case err != nil:
			logx.Errorf("replay job %d: %v", job.ID, err)
			if !sleep(ctx, r.conf.Bulk.CheckInterval) {
				return
			}
			continue
		case !ok:
			r.stopJob(job.ID, store.JobDone, "all dead letters handled")
			return
		case item.State == store.ItemSending:
			// Left by a process that stopped mid-item: find out whether its replay is on the topic.
			if _, err := r.settle(ctx, p, item, store.ItemPending); err != nil {
				logx.Errorf("replay job %d: settle item %d: %v", job.ID, item.Seq, err)
				if !sleep(ctx, r.conf.Bulk.CheckInterval) {
					return
				}
			}
			continue
		}
		if !last.IsZero() && !r.waitSlot(ctx, job.ID, last.Add(interval), check) {
			return
		}
		last = time.Now()
		err = r.runItem(ctx, p, item)
		switch {
		case err == nil, errors.Is(err, ErrAlreadyReplayed), errors.Is(err, ErrDiscarded),
			errors.Is(err, ErrConflictNotReplayable):
			// Replayed, or resolved by someone else since the job started, or a conflict, which is never
			// replayed (the item is skipped): no sign of trouble.
			consecutive = 0
		case errors.Is(err, store.ErrNotFound):
			consecutive = 0
			if err := r.jobs.SetItem(context.WithoutCancel(ctx), item, store.ItemSkipped); err != nil {
				logx.Errorf("replay job %d: %v", job.ID, err)
			}
		case errors.Is(err, errJobStopped):
			return
		default:
			found, serr := r.settle(context.WithoutCancel(ctx), p, item, store.ItemFailed)
			if serr != nil {
				logx.Errorf("replay job %d: settle item %d: %v", job.ID, item.Seq, serr)
			}
			if found {
				consecutive = 0
				continue
			}
			consecutive++
			if err := r.jobs.SetLastError(context.WithoutCancel(ctx), job.ID, lastError(item.DeadLetterID, err)); err != nil {
				logx.Errorf("replay job %d: %v", job.ID, err)
			}
			if consecutive >= r.conf.Bulk.PauseAfterFailures {
				r.stopJob(job.ID, store.JobPaused, fmt.Sprintf("%d replays in a row failed", consecutive))
				return
			}
		}
	}
}

// runItem replays one item. It does not end with the runner's ctx: a stop waits for the item, so a graceful
// stop never leaves an item whose produce outcome is unknown.
func (r *Resolver) runItem(ctx context.Context, p auth.Principal, item store.Item) error {
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*r.conf.Timeout)
	defer cancel()
	step := &jobStep{item: item, beforeSend: func(ctx context.Context, msg kafka.Message) error {
		probe, err := r.topic.EndOffsets(ctx, msg.Topic)
		if err != nil {
			return err
		}
		return r.jobs.MarkSending(ctx, item, r.bulk.owner, r.conf.Bulk.LeaseTTL, probe)
	}}
	_, err := r.replay(ictx, p, item.DeadLetterID, step)
	return err
}

// settle decides an item that failed or was found sending. A sending item whose dead letter is still new is
// looked for on the topic from its probe: found, the dead letter is marked replayed (audited, nothing is
// sent) and found is true; not found, the item becomes notFound (pending, to be sent, when a new process
// found it; failed after a failed produce). A pending item (the failure came before the produce) becomes
// failed. An item whose dead letter someone else resolved meanwhile is skipped.
func (r *Resolver) settle(ctx context.Context, p auth.Principal, item store.Item, notFound string) (found bool, err error) {
	item, err = r.jobs.Item(ctx, item.JobID, item.Seq)
	if err != nil {
		return false, err
	}
	if item.State == store.ItemPending {
		return false, r.jobs.SetItem(ctx, item, store.ItemFailed)
	}
	if item.State != store.ItemSending {
		return item.State == store.ItemReplayed, nil
	}
	res, err := r.dls.Lock(ctx, item.DeadLetterID)
	if errors.Is(err, store.ErrNotFound) {
		return false, r.jobs.SetItem(ctx, item, store.ItemSkipped)
	}
	if err != nil {
		return false, err
	}
	defer res.Rollback()
	dl := res.DeadLetter
	if dl.Status != store.StatusNew {
		if err := res.SetJobItem(ctx, item, store.ItemSkipped); err != nil {
			return false, err
		}
		return false, res.Commit()
	}
	// The dead letter stays locked while the topic is read, so no single replay of it starts meanwhile.
	found, err = r.topic.FindReplay(ctx, dl.OriginalTopic, item.Probe, dl.ID)
	if err != nil {
		return false, fmt.Errorf("look for the replay of dead letter %d: %w", dl.ID, err)
	}
	if !found {
		if err := res.SetJobItem(ctx, item, notFound); err != nil {
			return false, err
		}
		return false, res.Commit()
	}
	if err := res.MarkReplayed(ctx, p.Actor); err != nil {
		return false, err
	}
	entry := p.AuditOf(store.ActionReplay, store.OutcomeOK, "replay found on the topic after its outcome was lost; not sent again")
	entry.DeadLetterID, entry.JobID, entry.StateBefore, entry.StateAfter = dl.ID, item.JobID, dl.Status, store.StatusReplayed
	if err := res.Audit(ctx, entry); err != nil {
		return false, err
	}
	if err := res.SetJobItem(ctx, item, store.ItemReplayed); err != nil {
		return false, err
	}
	if err := res.Commit(); err != nil {
		return false, err
	}
	logx.Infof("replay job %d: dead letter %d was already on %s; recorded as replayed", item.JobID, dl.ID, dl.OriginalTopic)
	return true, nil
}

// waitSlot waits until at, checking the job every CheckInterval meanwhile; false when the job must stop here
// (the process stops, an operator paused or cancelled it, or too many of its replays came back).
func (r *Resolver) waitSlot(ctx context.Context, id uint64, at time.Time, check *time.Ticker) bool {
	timer := time.NewTimer(time.Until(at))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return true
		case <-check.C:
			if !r.checkJob(ctx, id) {
				return false
			}
		}
	}
}

// checkJob renews the lease and pauses the job once enough of its replays came back as new dead letters;
// false when the job must stop here.
func (r *Resolver) checkJob(ctx context.Context, id uint64) bool {
	err := r.jobs.Renew(ctx, id, r.bulk.owner, r.conf.Bulk.LeaseTTL)
	if errors.Is(err, store.ErrNotOwner) || errors.Is(err, store.ErrNotFound) {
		return false
	}
	if err != nil {
		logx.Errorf("replay job %d: %v", id, err)
		return ctx.Err() == nil
	}
	job, err := r.jobs.Get(ctx, id)
	if err != nil {
		logx.Errorf("replay job %d: %v", id, err)
		return ctx.Err() == nil
	}
	n, err := r.jobs.CountRedeadLettered(ctx, id)
	if err != nil {
		logx.Errorf("replay job %d: %v", id, err)
		return ctx.Err() == nil
	}
	back := n - job.RedeadBaseline
	if back != job.RedeadLettered {
		if err := r.jobs.SetRedeadLettered(ctx, id, back); err != nil {
			logx.Errorf("replay job %d: %v", id, err)
		}
	}
	if back >= r.conf.Bulk.PauseAfterRedeadLettered {
		r.stopJob(id, store.JobPaused, fmt.Sprintf("%d replays came back as new dead letters", back))
		return false
	}
	return true
}

// stopJob moves a job this replica runs to paused or done.
func (r *Resolver) stopJob(id uint64, state, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := r.jobs.Stop(ctx, id, r.bulk.owner, state, reason)
	switch {
	case errors.Is(err, store.ErrNotOwner):
		// An operator paused or cancelled it first; their state stands.
	case err != nil:
		logx.Errorf("replay job %d: %v", id, err)
	default:
		logx.Infof("replay job %d %s: %s", id, state, reason)
	}
}

// lastError is what a job shows of an item's failure: the dead letter's id and the kind of failure, never
// the error text, which may quote a header.
func lastError(id uint64, err error) string {
	switch {
	case errors.Is(err, ErrProduce):
		return fmt.Sprintf("dead letter %d: kafka did not acknowledge the replay", id)
	case errors.Is(err, ErrTopicNotAllowed):
		return fmt.Sprintf("dead letter %d: original topic is missing or not allowed for replay", id)
	default:
		return fmt.Sprintf("dead letter %d: the replay could not be built or recorded (see the log)", id)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
