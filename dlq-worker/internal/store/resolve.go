package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Resolution is a transaction holding the row lock of one dead letter while a replay or discard decides
// and records its outcome. Two operators acting on the same dead letter are serialised by the lock, so only
// one of them sees status new.
type Resolution struct {
	tx  *sql.Tx
	now func() time.Time
	// DeadLetter is the locked row, value included.
	DeadLetter DeadLetter
	done       bool
}

// Lock starts a Resolution of dead letter id, or returns ErrNotFound. The caller must Commit or Rollback.
func (s *DeadLetters) Lock(ctx context.Context, id uint64) (*Resolution, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	dl, err := scanDeadLetter(tx.QueryRowContext(ctx,
		"SELECT "+metaColumns+", record_value, raw_record FROM dead_letters WHERE id = ? FOR UPDATE", id), true)
	if err != nil {
		_ = tx.Rollback()
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("lock dead letter %d: %w", id, err)
	}
	return &Resolution{tx: tx, now: s.now, DeadLetter: dl}, nil
}

// MarkReplayed sets the locked dead letter's status to replayed.
func (r *Resolution) MarkReplayed(ctx context.Context, actor string) error {
	return r.resolve(ctx, StatusReplayed, actor, "")
}

// MarkDiscarded sets the locked dead letter's status to discarded with reasonCode.
func (r *Resolution) MarkDiscarded(ctx context.Context, actor, reasonCode string) error {
	return r.resolve(ctx, StatusDiscarded, actor, reasonCode)
}

func (r *Resolution) resolve(ctx context.Context, status, actor, reasonCode string) error {
	_, err := r.tx.ExecContext(ctx, `UPDATE dead_letters SET status = ?, resolved_at = ?, resolved_by = ?,
		discard_reason = ? WHERE id = ? AND status = ?`,
		status, dbTime(r.now()), truncate(actor, 255), nullString(reasonCode), r.DeadLetter.ID, StatusNew)
	if err != nil {
		return fmt.Errorf("mark dead letter %d %s: %w", r.DeadLetter.ID, status, err)
	}
	return nil
}

// Audit appends e in the same transaction, so the status change and its audit row commit together.
func (r *Resolution) Audit(ctx context.Context, e AuditEntry) error {
	return appendAudit(ctx, r.tx, r.now(), e)
}

// SetJobItem sets a bulk job's item in the same transaction, so a dead letter's status and its job's record
// of it commit together: a job never finds its item pending while the dead letter is replayed, or the reverse.
func (r *Resolution) SetJobItem(ctx context.Context, it Item, state string) error {
	return setItem(ctx, r.tx, dbTime(r.now()), it, state)
}

// Commit ends the Resolution, keeping its changes.
func (r *Resolution) Commit() error {
	r.done = true
	if err := r.tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// Rollback ends the Resolution without changes; after Commit it does nothing, so it can be deferred.
func (r *Resolution) Rollback() {
	if !r.done {
		r.done = true
		_ = r.tx.Rollback()
	}
}
