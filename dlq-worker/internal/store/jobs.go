package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Job states. A job is created running; running and paused are the only states it leaves.
//
//	running ──pause (operator, or itself after failures)──► paused ──resume──► running
//	running ──every item handled──► done
//	running, paused ──cancel──► cancelled (its pending items stay pending, their dead letters untouched)
const (
	// JobRunning: some replica holds (or will take) the job's lease and replays its pending items.
	JobRunning = "running"
	JobPaused  = "paused"
	JobDone    = "done"
	// JobCancelled: an operator ended the job; what it had not replayed stays as it was.
	JobCancelled = "cancelled"
	// JobInterrupted is only found on jobs started before jobs were durable (migration 00003): their work
	// list died with the process. A new job with the same filter takes what is still new.
	JobInterrupted = "interrupted"
)

// Item states: where one dead letter of a job got to.
const (
	ItemPending = "pending"
	// ItemSending: the item's produce was about to start (or started); whether Kafka holds the replay is
	// settled by looking for it on the topic from the item's probe offsets, never by sending again blindly.
	ItemSending  = "sending"
	ItemReplayed = "replayed"
	// ItemSkipped: resolved by someone else meanwhile, gone, or a request-id conflict: nothing to send.
	ItemSkipped = "skipped"
	// ItemFailed: the replay was not acknowledged (and is not on the topic) or cannot be built; the dead
	// letter stays new and a later job may take it.
	ItemFailed = "failed"
)

// ErrNotOwner: the job is not running under the caller's lease any more (paused, cancelled, done, or its
// lease expired and another replica took it). The caller stops working on it.
var ErrNotOwner = errors.New("job is not running under this lease")

// ErrJobState: the job is not in a state the requested transition starts from.
var ErrJobState = errors.New("job is not in a state that allows this")

// Job is one row of replay_jobs. The counters are computed from its items when read.
type Job struct {
	ID             uint64
	Actor          string
	Filter         Filter
	RatePerSecond  float64
	State          string
	StateReason    string
	LastError      string
	Total          int
	Done           int // replayed or skipped
	Failed         int
	Skipped        int
	RedeadLettered int
	// RedeadBaseline is how many of its replays had come back when the job was last resumed; only later
	// ones count towards pausing it again.
	RedeadBaseline int
	LeaseOwner     string
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// Item is one row of replay_job_items.
type Item struct {
	JobID        uint64
	Seq          int
	DeadLetterID uint64
	State        string
	// Probe holds the end offsets of the target topic's partitions read before the produce (ItemSending).
	Probe map[int]int64
}

// Jobs is the replay_jobs and replay_job_items tables.
type Jobs struct {
	db  *sql.DB
	now func() time.Time
}

// NewJobs returns the tables on db.
func NewJobs(db *sql.DB) *Jobs { return &Jobs{db: db, now: time.Now} }

// itemBatch is how many items one INSERT writes.
const itemBatch = 500

// Create inserts j (state running, counters zero) with deadLetterIDs as its items, in that order, and the
// audit row of its start (its JobID filled in here), in one transaction, and returns it with its id and times.
func (s *Jobs) Create(ctx context.Context, j Job, deadLetterIDs []uint64, started AuditEntry) (Job, error) {
	filter, err := json.Marshal(j.Filter)
	if err != nil {
		return Job{}, fmt.Errorf("encode job filter: %w", err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Job{}, fmt.Errorf("create replay job: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	now := dbTime(s.now())
	j.State, j.Total = JobRunning, len(deadLetterIDs)
	res, err := tx.ExecContext(ctx, `INSERT INTO replay_jobs (actor, filter, rate_per_second, state, state_reason,
		total, done, failed, skipped, redead_lettered, created_at, updated_at) VALUES (?,?,?,?,?,?,0,0,0,0,?,?)`,
		truncate(j.Actor, 255), string(filter), j.RatePerSecond, j.State, nullString(j.StateReason), j.Total, now, now)
	if err != nil {
		return Job{}, fmt.Errorf("create replay job: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return Job{}, fmt.Errorf("create replay job: %w", err)
	}
	j.ID, j.CreatedAt, j.UpdatedAt = uint64(id), now, now
	for start := 0; start < len(deadLetterIDs); start += itemBatch {
		end := min(start+itemBatch, len(deadLetterIDs))
		var q strings.Builder
		args := make([]any, 0, 5*(end-start))
		q.WriteString("INSERT INTO replay_job_items (job_id, seq, dead_letter_id, state, updated_at) VALUES ")
		for i := start; i < end; i++ {
			if i > start {
				q.WriteString(",")
			}
			q.WriteString("(?,?,?,?,?)")
			args = append(args, j.ID, i, deadLetterIDs[i], ItemPending, now)
		}
		if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
			return Job{}, fmt.Errorf("create items of replay job %d: %w", j.ID, err)
		}
	}
	started.JobID = j.ID
	if err := appendAudit(ctx, tx, s.now(), started); err != nil {
		return Job{}, err
	}
	if err := tx.Commit(); err != nil {
		return Job{}, fmt.Errorf("create replay job: commit: %w", err)
	}
	return j, nil
}

const jobColumns = `id, actor, filter, rate_per_second, state, state_reason, last_error, total, done, failed,
	skipped, redead_lettered, redead_baseline, lease_owner, created_at, updated_at`

func scanJob(r rowScanner) (Job, error) {
	var (
		j                           Job
		filter                      []byte
		reason, lastErr, leaseOwner sql.NullString
	)
	if err := r.Scan(&j.ID, &j.Actor, &filter, &j.RatePerSecond, &j.State, &reason, &lastErr, &j.Total, &j.Done,
		&j.Failed, &j.Skipped, &j.RedeadLettered, &j.RedeadBaseline, &leaseOwner, &j.CreatedAt, &j.UpdatedAt); err != nil {
		return Job{}, err
	}
	if err := json.Unmarshal(filter, &j.Filter); err != nil {
		return Job{}, fmt.Errorf("decode filter of replay job %d: %w", j.ID, err)
	}
	j.StateReason, j.LastError, j.LeaseOwner = reason.String, lastErr.String, leaseOwner.String
	j.CreatedAt, j.UpdatedAt = j.CreatedAt.UTC(), j.UpdatedAt.UTC()
	return j, nil
}

// Get returns job id with its counters, or ErrNotFound.
func (s *Jobs) Get(ctx context.Context, id uint64) (Job, error) {
	j, err := scanJob(s.db.QueryRowContext(ctx, "SELECT "+jobColumns+" FROM replay_jobs WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return Job{}, ErrNotFound
	}
	if err != nil {
		return Job{}, fmt.Errorf("get replay job %d: %w", id, err)
	}
	rows, err := s.db.QueryContext(ctx,
		"SELECT state, COUNT(*) FROM replay_job_items WHERE job_id = ? GROUP BY state", id)
	if err != nil {
		return Job{}, fmt.Errorf("count items of replay job %d: %w", id, err)
	}
	defer rows.Close()
	counts := map[string]int{}
	items := 0
	for rows.Next() {
		var state string
		var n int
		if err := rows.Scan(&state, &n); err != nil {
			return Job{}, fmt.Errorf("count items of replay job %d: %w", id, err)
		}
		counts[state] = n
		items += n
	}
	if err := rows.Err(); err != nil {
		return Job{}, fmt.Errorf("count items of replay job %d: %w", id, err)
	}
	// Jobs from before migration 00003 have no items; their saved counters stand.
	if items > 0 {
		j.Done = counts[ItemReplayed] + counts[ItemSkipped]
		j.Skipped, j.Failed = counts[ItemSkipped], counts[ItemFailed]
	}
	return j, nil
}

// Claim gives owner the lease of one running job that no live lease holds (none yet, released, or expired),
// for ttl, and returns it; ok is false when there is none. Lease times are the database's clock.
func (s *Jobs) Claim(ctx context.Context, owner string, ttl time.Duration) (job Job, ok bool, err error) {
	var id uint64
	err = s.db.QueryRowContext(ctx, `SELECT id FROM replay_jobs WHERE state = ?
		AND (lease_until IS NULL OR lease_until < UTC_TIMESTAMP(6)) ORDER BY id LIMIT 1`, JobRunning).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return Job{}, false, nil
	}
	if err != nil {
		return Job{}, false, fmt.Errorf("find a replay job to run: %w", err)
	}
	// Conditional on what was read, so of two replicas claiming at once one wins and the other changes nothing.
	res, err := s.db.ExecContext(ctx, `UPDATE replay_jobs SET lease_owner = ?,
		lease_until = DATE_ADD(UTC_TIMESTAMP(6), INTERVAL ? MICROSECOND)
		WHERE id = ? AND state = ? AND (lease_until IS NULL OR lease_until < UTC_TIMESTAMP(6))`,
		owner, ttl.Microseconds(), id, JobRunning)
	if err != nil {
		return Job{}, false, fmt.Errorf("claim replay job %d: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return Job{}, false, err
	}
	job, err = s.Get(ctx, id)
	return job, err == nil, err
}

// renew extends owner's lease of job id by ttl if the job is running under that lease, in one statement:
// pause, cancel and take-over change the same row, so whichever comes first decides. ErrNotOwner otherwise.
func renew(ctx context.Context, ex execer, id uint64, owner string, ttl time.Duration) error {
	res, err := ex.ExecContext(ctx, `UPDATE replay_jobs SET lease_until = DATE_ADD(UTC_TIMESTAMP(6), INTERVAL ? MICROSECOND)
		WHERE id = ? AND state = ? AND lease_owner = ? AND lease_until >= UTC_TIMESTAMP(6)`,
		ttl.Microseconds(), id, JobRunning, owner)
	if err != nil {
		return fmt.Errorf("renew lease of replay job %d: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("renew lease of replay job %d: %w", id, err)
	}
	if n != 1 {
		return ErrNotOwner
	}
	return nil
}

// Renew extends owner's lease of job id by ttl, or returns ErrNotOwner if the job is no longer running under
// it (an operator paused or cancelled it, or its lease expired).
func (s *Jobs) Renew(ctx context.Context, id uint64, owner string, ttl time.Duration) error {
	return renew(ctx, s.db, id, owner, ttl)
}

// Next renews owner's lease of job id and returns its first item still pending or sending; ok is false when
// every item is handled.
func (s *Jobs) Next(ctx context.Context, id uint64, owner string, ttl time.Duration) (item Item, ok bool, err error) {
	if err := renew(ctx, s.db, id, owner, ttl); err != nil {
		return Item{}, false, err
	}
	var probe []byte
	err = s.db.QueryRowContext(ctx, `SELECT seq, dead_letter_id, state, probe FROM replay_job_items
		WHERE job_id = ? AND state IN (?, ?) ORDER BY seq LIMIT 1`, id, ItemPending, ItemSending).Scan(
		&item.Seq, &item.DeadLetterID, &item.State, &probe)
	if errors.Is(err, sql.ErrNoRows) {
		return Item{}, false, nil
	}
	if err != nil {
		return Item{}, false, fmt.Errorf("next item of replay job %d: %w", id, err)
	}
	item.JobID = id
	item.Probe, err = decodeProbe(probe)
	return item, err == nil, err
}

// MarkSending records, once it renewed owner's lease of the item's job, that the item's produce is about to
// start and where on the target topic its record would land (probe: each partition's end offset now). It
// returns ErrNotOwner, and changes nothing, if the job was paused or cancelled before: then nothing is sent.
// A pause that comes after the renewal lets this one item finish.
func (s *Jobs) MarkSending(ctx context.Context, it Item, owner string, ttl time.Duration, probe map[int]int64) error {
	enc := make(map[string]int64, len(probe))
	for p, off := range probe {
		enc[strconv.Itoa(p)] = off
	}
	b, err := json.Marshal(enc)
	if err != nil {
		return fmt.Errorf("encode probe: %w", err)
	}
	if err := renew(ctx, s.db, it.JobID, owner, ttl); err != nil {
		return err
	}
	_, err = s.db.ExecContext(ctx, `UPDATE replay_job_items SET state = ?, probe = ?, updated_at = ?
		WHERE job_id = ? AND seq = ? AND state = ?`, ItemSending, string(b), dbTime(s.now()), it.JobID, it.Seq, ItemPending)
	if err != nil {
		return fmt.Errorf("mark item %d of replay job %d sending: %w", it.Seq, it.JobID, err)
	}
	return nil
}

func decodeProbe(b []byte) (map[int]int64, error) {
	if len(b) == 0 {
		return nil, nil
	}
	var enc map[string]int64
	if err := json.Unmarshal(b, &enc); err != nil {
		return nil, fmt.Errorf("decode probe: %w", err)
	}
	out := make(map[int]int64, len(enc))
	for k, v := range enc {
		p, err := strconv.Atoi(k)
		if err != nil {
			return nil, fmt.Errorf("decode probe partition %q: %w", k, err)
		}
		out[p] = v
	}
	return out, nil
}

// SetItem sets an item's state on its own (outcomes that change no dead letter: failed, skipped because the
// dead letter is gone, or back to pending when its replay is not on the topic).
func (s *Jobs) SetItem(ctx context.Context, it Item, state string) error {
	return setItem(ctx, s.db, dbTime(s.now()), it, state)
}

func setItem(ctx context.Context, ex execer, now time.Time, it Item, state string) error {
	if _, err := ex.ExecContext(ctx, `UPDATE replay_job_items SET state = ?, updated_at = ? WHERE job_id = ? AND seq = ?`,
		state, now, it.JobID, it.Seq); err != nil {
		return fmt.Errorf("set item %d of replay job %d %s: %w", it.Seq, it.JobID, state, err)
	}
	return nil
}

// SetLastError records the last failure of job id: a fixed text and ids, never a report's content.
func (s *Jobs) SetLastError(ctx context.Context, id uint64, msg string) error {
	if _, err := s.db.ExecContext(ctx, "UPDATE replay_jobs SET last_error = ?, updated_at = ? WHERE id = ?",
		truncate(msg, 255), dbTime(s.now()), id); err != nil {
		return fmt.Errorf("save last error of replay job %d: %w", id, err)
	}
	return nil
}

// SetRedeadLettered saves how many of job id's replays came back since its last resume.
func (s *Jobs) SetRedeadLettered(ctx context.Context, id uint64, n int) error {
	if _, err := s.db.ExecContext(ctx, "UPDATE replay_jobs SET redead_lettered = ? WHERE id = ?", n, id); err != nil {
		return fmt.Errorf("save re-dead-lettered count of replay job %d: %w", id, err)
	}
	return nil
}

// Stop moves job id from running to state (paused or done) for reason, under owner's lease, and releases
// the lease. ErrNotOwner: an operator changed the job first, and it stays as they left it.
func (s *Jobs) Stop(ctx context.Context, id uint64, owner string, state, reason string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE replay_jobs SET state = ?, state_reason = ?, lease_owner = NULL,
		lease_until = NULL, updated_at = ? WHERE id = ? AND state = ? AND lease_owner = ?`,
		state, nullString(truncate(reason, 255)), dbTime(s.now()), id, JobRunning, owner)
	if err != nil {
		return fmt.Errorf("set replay job %d %s: %w", id, state, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return errors.Join(ErrNotOwner, err)
	}
	return nil
}

// Release gives up owner's lease of job id, whatever its state, so another replica (or the next process)
// takes a running job at once instead of waiting for the lease to expire.
func (s *Jobs) Release(ctx context.Context, id uint64, owner string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE replay_jobs SET lease_owner = NULL, lease_until = NULL
		WHERE id = ? AND lease_owner = ?`, id, owner); err != nil {
		return fmt.Errorf("release replay job %d: %w", id, err)
	}
	return nil
}

// Transition moves job id from one of from to state for reason (an operator's pause, resume or cancel) and
// appends audit (its JobID filled in here) in the same transaction. ErrJobState: the job is in none of from,
// and nothing changes. A move to running sets the baseline of re-dead-lettered replays to redeadBaseline.
// The state changes in one conditional statement, so a runner's renewal sees it or precedes it.
func (s *Jobs) Transition(ctx context.Context, id uint64, from []string, state, reason string, redeadBaseline int,
	audit AuditEntry) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		q := `UPDATE replay_jobs SET state = ?, state_reason = ?, updated_at = ?`
		args := []any{state, nullString(truncate(reason, 255)), dbTime(s.now())}
		if state == JobRunning {
			q += ", redead_baseline = ?, redead_lettered = 0"
			args = append(args, redeadBaseline)
		}
		q += " WHERE id = ? AND state IN (?" + strings.Repeat(", ?", len(from)-1) + ")"
		args = append(args, id)
		for _, f := range from {
			args = append(args, f)
		}
		res, err := tx.ExecContext(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("set replay job %d %s: %w", id, state, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("set replay job %d %s: %w", id, state, err)
		}
		if n != 1 {
			var one int
			err := tx.QueryRowContext(ctx, "SELECT 1 FROM replay_jobs WHERE id = ?", id).Scan(&one)
			if errors.Is(err, sql.ErrNoRows) {
				return ErrNotFound
			}
			return errors.Join(ErrJobState, err)
		}
		audit.JobID = id
		return appendAudit(ctx, tx, s.now(), audit)
	})
}

// Item returns item seq of job id as it is now.
func (s *Jobs) Item(ctx context.Context, id uint64, seq int) (Item, error) {
	it := Item{JobID: id, Seq: seq}
	var probe []byte
	err := s.db.QueryRowContext(ctx, "SELECT dead_letter_id, state, probe FROM replay_job_items WHERE job_id = ? AND seq = ?",
		id, seq).Scan(&it.DeadLetterID, &it.State, &probe)
	if errors.Is(err, sql.ErrNoRows) {
		return Item{}, ErrNotFound
	}
	if err != nil {
		return Item{}, fmt.Errorf("item %d of replay job %d: %w", seq, id, err)
	}
	it.Probe, err = decodeProbe(probe)
	return it, err
}

// CountRedeadLettered returns how many dead letters arrived carrying x-replay-of for one of the dead letters
// the job replayed: replays that failed again in epro-mq.
func (s *Jobs) CountRedeadLettered(ctx context.Context, jobID uint64) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM dead_letters d WHERE d.replay_of IN (
		SELECT a.dead_letter_id FROM dead_letter_audit a WHERE a.job_id = ? AND a.action = ? AND a.outcome = ?)`,
		jobID, ActionReplay, OutcomeOK).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count re-dead-lettered replays of job %d: %w", jobID, err)
	}
	return n, nil
}

// inTx runs fn in a transaction and commits it if fn returns nil.
func (s *Jobs) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
