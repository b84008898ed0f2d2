package reconcile

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/epro-intake/dlq-worker/internal/store"
)

// Actor is who runs a reconciliation, as the audit trail records it.
type Actor struct {
	Name string
	Role string
}

// Audited runs e.Run between two audit rows (action reconcile): one when it starts, naming the range, and one
// with the counts when it ends, outcome ok, missing or failed. A run whose first row cannot be written does
// not start; the last row is written even when ctx has ended.
func (e *Engine) Audited(ctx context.Context, audit *store.Audit, who Actor, r Range, onException func(Exception) error, onProgress func(Progress)) (Summary, error) {
	entry := store.AuditEntry{Actor: who.Name, Role: who.Role, Action: store.ActionReconcile, Outcome: store.OutcomeStarted, Reason: r.String()}
	if err := audit.Append(ctx, entry); err != nil {
		return Summary{}, err
	}
	sum, err := e.Run(ctx, r, onException, onProgress)
	entry.Outcome, entry.Reason = store.OutcomeOK, sum.Text()
	switch {
	case err != nil:
		entry.Outcome, entry.Reason = store.OutcomeFailed, sum.Text()+"; stopped: "+err.Error()
	case sum.Missing() > 0:
		entry.Outcome = store.OutcomeMissing
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.conf.QueryTimeout)
	defer cancel()
	if aerr := audit.Append(actx, entry); aerr != nil {
		return sum, errors.Join(err, aerr)
	}
	return sum, err
}

// String describes r for people and the audit trail.
func (r Range) String() string {
	from := "the first retained record"
	switch {
	case r.FromOffset != nil:
		from = fmt.Sprintf("offset %d", *r.FromOffset)
	case !r.FromTime.IsZero():
		from = r.FromTime.UTC().Format(time.RFC3339)
	}
	to := "the group's committed offsets"
	if r.ToEnd {
		to = "the end"
	}
	return "every partition from " + from + " to " + to
}
