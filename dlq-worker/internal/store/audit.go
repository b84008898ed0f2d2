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
	// An operator's pause, resume or cancel of a bulk job.
	ActionJobPause  = "job_pause"
	ActionJobResume = "job_resume"
	ActionJobCancel = "job_cancel"
	// ActionReconcile: a reconciliation of the report topic ran (internal/reconcile); one row when it
	// starts, one with its counts when it ends.
	ActionReconcile = "reconcile"
	// ActionRedrive: a record a reconciliation found missing was re-produced to the report topic (or was
	// skipped, having come back meanwhile). The reason names the record's position and request id, never
	// its content.
	ActionRedrive = "redrive"
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
	// OutcomeSkipped: a re-drive that was not sent, because the record was no longer missing (or could not
	// be re-driven); the reason says which.
	OutcomeSkipped = "skipped"
)

// AuditEntry is one row of dead_letter_audit: who (Actor, the token's subject, and ActorIssuer, its issuer;
// Role), when (At, the server's clock in UTC, set by Append), what (Action on DeadLetterID and/or JobID, its
// Outcome, the dead letter's status before and after), why (ReasonCode, Reason) and from where (ClientAddr,
// the remote address as the server saw it). Empty strings are stored as NULL; rows written before migration
// 00002 have no issuer, address or states.
type AuditEntry struct {
	ID           uint64
	At           time.Time
	Actor        string
	ActorIssuer  string
	Role         string
	ClientAddr   string
	Action       string
	Outcome      string
	DeadLetterID uint64 // 0: none
	JobID        uint64 // 0: none
	StateBefore  string
	StateAfter   string
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
		(at, actor, actor_issuer, role, client_addr, action, outcome, dead_letter_id, job_id, state_before,
		state_after, reason_code, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		dbTime(now), truncate(e.Actor, 255), nullString(truncate(e.ActorIssuer, 255)), e.Role,
		nullString(truncate(e.ClientAddr, 255)), e.Action, e.Outcome, nullID(e.DeadLetterID), nullID(e.JobID),
		nullString(e.StateBefore), nullString(e.StateAfter), nullString(e.ReasonCode),
		nullString(truncate(e.Reason, 1024)))
	if err != nil {
		return fmt.Errorf("append audit %s: %w", e.Action, err)
	}
	return nil
}

// ForDeadLetter returns the audit trail of one dead letter, oldest first.
func (a *Audit) ForDeadLetter(ctx context.Context, id uint64) ([]AuditEntry, error) {
	return a.collect(ctx, "a.dead_letter_id = ?", id)
}

// ForJob returns the audit rows a bulk job wrote, oldest first.
func (a *Audit) ForJob(ctx context.Context, jobID uint64) ([]AuditEntry, error) {
	return a.collect(ctx, "a.job_id = ?", jobID)
}

// AuditSelection picks the rows Export streams: one dead letter's trail, or every row about a dead letter of
// one patient (through dead_letters.patient_id). Exactly one field is set.
type AuditSelection struct {
	DeadLetterID uint64
	PatientID    string
}

// Export calls fn with every row of sel, oldest first, one row at a time as the database returns them, so a
// long history is never held in memory. It stops at fn's first error and returns it.
func (a *Audit) Export(ctx context.Context, sel AuditSelection, fn func(AuditEntry) error) error {
	switch {
	case sel.DeadLetterID != 0 && sel.PatientID == "":
		return a.each(ctx, "a.dead_letter_id = ?", sel.DeadLetterID, fn)
	case sel.PatientID != "" && sel.DeadLetterID == 0:
		return a.each(ctx, "a.dead_letter_id IN (SELECT id FROM dead_letters WHERE patient_id = ?)", sel.PatientID, fn)
	default:
		return fmt.Errorf("export audit: select a dead letter or a patient")
	}
}

func (a *Audit) collect(ctx context.Context, where string, arg any) ([]AuditEntry, error) {
	var out []AuditEntry
	err := a.each(ctx, where, arg, func(e AuditEntry) error {
		out = append(out, e)
		return nil
	})
	return out, err
}

func (a *Audit) each(ctx context.Context, where string, arg any, fn func(AuditEntry) error) error {
	rows, err := a.db.QueryContext(ctx, `SELECT a.id, a.at, a.actor, a.actor_issuer, a.role, a.client_addr,
		a.action, a.outcome, a.dead_letter_id, a.job_id, a.state_before, a.state_after, a.reason_code, a.reason
		FROM dead_letter_audit a WHERE `+where+` ORDER BY a.id`, arg)
	if err != nil {
		return fmt.Errorf("read audit: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var e AuditEntry
		var dlID, jobID sql.NullInt64
		var issuer, addr, before, after, code, reason sql.NullString
		if err := rows.Scan(&e.ID, &e.At, &e.Actor, &issuer, &e.Role, &addr, &e.Action, &e.Outcome, &dlID,
			&jobID, &before, &after, &code, &reason); err != nil {
			return fmt.Errorf("read audit: %w", err)
		}
		e.At = e.At.UTC()
		e.DeadLetterID, e.JobID = uint64(dlID.Int64), uint64(jobID.Int64)
		e.ActorIssuer, e.ClientAddr = issuer.String, addr.String
		e.StateBefore, e.StateAfter = before.String, after.String
		e.ReasonCode, e.Reason = code.String, reason.String
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read audit: %w", err)
	}
	return nil
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
