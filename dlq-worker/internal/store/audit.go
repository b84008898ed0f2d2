package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Audit actions.
const (
	ActionReplay     = "replay"
	ActionDiscard    = "discard"
	ActionReveal     = "reveal"
	ActionBulkReplay = "bulk_replay"
	// ActionReconcile: a reconciliation of the report topic ran (internal/reconcile); one row when it
	// starts, one with its counts when it ends.
	ActionReconcile = "reconcile"
)

// Audit outcomes.
const (
	OutcomeOK              = "ok"
	OutcomeAlreadyReplayed = "already_replayed"
	OutcomeConflict        = "conflict"
	OutcomeFailed          = "failed"
	// OutcomeStarted and OutcomeMissing are a reconciliation's: begun, and finished with records missing.
	OutcomeStarted = "started"
	OutcomeMissing = "missing"
)

// AuditEntry is one row of dead_letter_audit. At is set by Append.
type AuditEntry struct {
	ID           uint64
	At           time.Time
	Actor        string
	Role         string
	Action       string
	Outcome      string
	DeadLetterID uint64 // 0: none
	JobID        uint64 // 0: none
	ReasonCode   string
	Reason       string
}

// execer is what Append needs: the database, or the transaction that changes the dead letter.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Audit is the append-only dead_letter_audit table. It has no method that updates or deletes a row, on
// purpose: the trail must show every replay, discard and reveal as it happened.
type Audit struct {
	db  *sql.DB
	now func() time.Time
}

// NewAudit returns the audit table on db.
func NewAudit(db *sql.DB) *Audit {
	return &Audit{db: db, now: time.Now}
}

// Append adds e on its own.
func (a *Audit) Append(ctx context.Context, e AuditEntry) error {
	return appendAudit(ctx, a.db, a.now(), e)
}

func appendAudit(ctx context.Context, ex execer, now time.Time, e AuditEntry) error {
	_, err := ex.ExecContext(ctx, `INSERT INTO dead_letter_audit
		(at, actor, role, action, outcome, dead_letter_id, job_id, reason_code, reason) VALUES (?,?,?,?,?,?,?,?,?)`,
		dbTime(now), e.Actor, e.Role, e.Action, e.Outcome, nullID(e.DeadLetterID), nullID(e.JobID),
		nullString(e.ReasonCode), nullString(truncate(e.Reason, 1024)))
	if err != nil {
		return fmt.Errorf("append audit %s: %w", e.Action, err)
	}
	return nil
}

// ForDeadLetter returns the audit trail of one dead letter, oldest first.
func (a *Audit) ForDeadLetter(ctx context.Context, id uint64) ([]AuditEntry, error) {
	return a.query(ctx, "dead_letter_id = ?", id)
}

// ForJob returns the audit rows a bulk job wrote, oldest first.
func (a *Audit) ForJob(ctx context.Context, jobID uint64) ([]AuditEntry, error) {
	return a.query(ctx, "job_id = ?", jobID)
}

func (a *Audit) query(ctx context.Context, where string, arg any) ([]AuditEntry, error) {
	rows, err := a.db.QueryContext(ctx, `SELECT id, at, actor, role, action, outcome, dead_letter_id, job_id,
		reason_code, reason FROM dead_letter_audit WHERE `+where+` ORDER BY id`, arg)
	if err != nil {
		return nil, fmt.Errorf("read audit: %w", err)
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var e AuditEntry
		var dlID, jobID sql.NullInt64
		var code, reason sql.NullString
		if err := rows.Scan(&e.ID, &e.At, &e.Actor, &e.Role, &e.Action, &e.Outcome, &dlID, &jobID, &code, &reason); err != nil {
			return nil, fmt.Errorf("read audit: %w", err)
		}
		e.At = e.At.UTC()
		e.DeadLetterID, e.JobID = uint64(dlID.Int64), uint64(jobID.Int64)
		e.ReasonCode, e.Reason = code.String, reason.String
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read audit: %w", err)
	}
	return out, nil
}

func nullID(id uint64) any {
	if id == 0 {
		return nil
	}
	return id
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary so the column never gets invalid UTF-8.
	for n > 0 && !isRuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
