package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Job states.
const (
	JobRunning = "running"
	JobPaused  = "paused"
	JobDone    = "done"
	// JobInterrupted: the process stopped while the job ran or was paused. Its remaining dead letters are
	// still new; a new job with the same filter picks them up.
	JobInterrupted = "interrupted"
)

// Job is one row of replay_jobs.
type Job struct {
	ID             uint64
	Actor          string
	Filter         Filter
	RatePerSecond  float64
	State          string
	StateReason    string
	Total          int
	Done           int
	Failed         int
	Skipped        int
	RedeadLettered int
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// Jobs is the replay_jobs table.
type Jobs struct {
	db  *sql.DB
	now func() time.Time
}

// NewJobs returns the table on db.
func NewJobs(db *sql.DB) *Jobs { return &Jobs{db: db, now: time.Now} }

// Create inserts j (State, counters and Filter as given) and returns it with its id and times.
func (s *Jobs) Create(ctx context.Context, j Job) (Job, error) {
	filter, err := json.Marshal(j.Filter)
	if err != nil {
		return Job{}, fmt.Errorf("encode job filter: %w", err)
	}
	now := dbTime(s.now())
	res, err := s.db.ExecContext(ctx, `INSERT INTO replay_jobs (actor, filter, rate_per_second, state, state_reason,
		total, done, failed, skipped, redead_lettered, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)`,
		truncate(j.Actor, 255), string(filter), j.RatePerSecond, j.State, nullString(j.StateReason), j.Total, j.Done,
		j.Failed, j.Skipped, j.RedeadLettered, now, now)
	if err != nil {
		return Job{}, fmt.Errorf("create replay job: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return Job{}, fmt.Errorf("create replay job: %w", err)
	}
	j.ID, j.CreatedAt, j.UpdatedAt = uint64(id), now, now
	return j, nil
}

// Save writes j's state and counters.
func (s *Jobs) Save(ctx context.Context, j Job) error {
	_, err := s.db.ExecContext(ctx, `UPDATE replay_jobs SET state = ?, state_reason = ?, total = ?, done = ?,
		failed = ?, skipped = ?, redead_lettered = ?, updated_at = ? WHERE id = ?`,
		j.State, nullString(truncate(j.StateReason, 255)), j.Total, j.Done, j.Failed, j.Skipped, j.RedeadLettered,
		dbTime(s.now()), j.ID)
	if err != nil {
		return fmt.Errorf("save replay job %d: %w", j.ID, err)
	}
	return nil
}

// Get returns job id or ErrNotFound.
func (s *Jobs) Get(ctx context.Context, id uint64) (Job, error) {
	var (
		j      Job
		filter []byte
		reason sql.NullString
	)
	err := s.db.QueryRowContext(ctx, `SELECT id, actor, filter, rate_per_second, state, state_reason, total, done,
		failed, skipped, redead_lettered, created_at, updated_at FROM replay_jobs WHERE id = ?`, id).Scan(
		&j.ID, &j.Actor, &filter, &j.RatePerSecond, &j.State, &reason, &j.Total, &j.Done, &j.Failed, &j.Skipped,
		&j.RedeadLettered, &j.CreatedAt, &j.UpdatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return Job{}, ErrNotFound
	}
	if err != nil {
		return Job{}, fmt.Errorf("get replay job %d: %w", id, err)
	}
	if err := json.Unmarshal(filter, &j.Filter); err != nil {
		return Job{}, fmt.Errorf("decode filter of replay job %d: %w", id, err)
	}
	j.StateReason = reason.String
	j.CreatedAt, j.UpdatedAt = j.CreatedAt.UTC(), j.UpdatedAt.UTC()
	return j, nil
}

// InterruptUnfinished marks jobs left running or paused by an earlier process as interrupted: their
// in-memory work lists died with it.
func (s *Jobs) InterruptUnfinished(ctx context.Context) error {
	_, err := s.db.ExecContext(ctx, `UPDATE replay_jobs SET state = ?, state_reason = ?, updated_at = ?
		WHERE state IN (?, ?)`, JobInterrupted, "dlq-worker restarted", dbTime(s.now()), JobRunning, JobPaused)
	if err != nil {
		return fmt.Errorf("interrupt unfinished replay jobs: %w", err)
	}
	return nil
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
