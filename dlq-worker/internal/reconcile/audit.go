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
	// Issuer and Addr are the token's issuer and the client's address, for a run started through the API.
	Issuer string
	Addr   string
	Role   string
}

func (a Actor) entry(outcome, reason string) store.AuditEntry {
	return store.AuditEntry{Actor: a.Name, ActorIssuer: a.Issuer, ClientAddr: a.Addr, Role: a.Role,
		Action: store.ActionReconcile, Outcome: outcome, Reason: reason}
}

// Audited runs e.Run between two audit rows (action reconcile): one when it starts, naming the range, and one
// with the counts when it ends, outcome ok, missing or failed. A run whose first row cannot be written does
// not start; the last row is written even when ctx has ended.
func (e *Engine) Audited(ctx context.Context, audit *store.Audit, who Actor, r Range, onException func(Exception) error, onProgress func(Progress)) (Summary, error) {
	if err := e.auditStart(ctx, audit, who, r); err != nil {
		return Summary{}, err
	}
	sum, err := e.Run(ctx, r, onException, onProgress)
	return sum, e.auditEnd(ctx, audit, who, sum, err)
}

func (e *Engine) auditStart(ctx context.Context, audit *store.Audit, who Actor, r Range) error {
	ctx, cancel := context.WithTimeout(ctx, e.conf.QueryTimeout)
	defer cancel()
	return audit.Append(ctx, who.entry(store.OutcomeStarted, r.String()))
}

// auditEnd writes the closing row of a run that ended with sum and err, and returns err joined with any
// failure to write it.
func (e *Engine) auditEnd(ctx context.Context, audit *store.Audit, who Actor, sum Summary, err error) error {
	entry := who.entry(store.OutcomeOK, sum.Text())
	switch {
	case err != nil:
		entry.Outcome, entry.Reason = store.OutcomeFailed, sum.Text()+"; stopped: "+err.Error()
	case sum.Missing() > 0:
		entry.Outcome = store.OutcomeMissing
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.conf.QueryTimeout)
	defer cancel()
	return errors.Join(err, audit.Append(actx, entry))
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
