package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/codes"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/epro-intake/common/backoff"
	"github.com/epro-intake/common/reportdb"
	"github.com/epro-intake/epro-mq/internal/store"
)

// entry is one decoded record of a batch on its way to MySQL.
type entry struct {
	msg         kafka.Message
	row         store.Report
	attempts    int
	first, last time.Time
	lastErr     *PermanentError
	done        bool
	// span is the record's process span (processSpan), ended when HandleBatch returns.
	span oteltrace.Span
}

func (e *entry) fail(err *PermanentError, now time.Time) {
	e.attempts++
	if e.first.IsZero() {
		e.first = now
	}
	e.last = now
	e.lastErr = err
}

// nextRound picks the entries the next round inserts: every unfinished one whose questionnaire is in the
// catalogue and whose patient has no earlier report still failing. blocked holds those patients; pending
// counts the unfinished entries, zero when the batch is done.
func (in *Ingester) nextRound(entries []*entry) (batch []*entry, blocked map[string]bool, pending int) {
	blocked = map[string]bool{}
	for _, e := range entries {
		if e.done {
			continue
		}
		pending++
		if blocked[e.row.PatientID] {
			continue
		}
		if err := in.check(e.row); err != nil {
			e.fail(err, in.now().UTC())
			blocked[e.row.PatientID] = true
			continue
		}
		batch = append(batch, e)
	}
	return batch, blocked, pending
}

// deadLetterExhausted dead-letters the entries that have failed permanently MaxAttempts times, and returns
// the attempts made by the most-tried entry that still has some left (zero when none has), which sizes the
// backoff before the next round.
func (in *Ingester) deadLetterExhausted(ctx context.Context, entries []*entry) (retry int, err error) {
	for _, e := range entries {
		if e.done || e.lastErr == nil {
			continue
		}
		if e.attempts >= in.conf.MaxAttempts {
			if err := in.deadLetter(e.traced(ctx), e.msg, in.exhausted(e), e.row.RequestID); err != nil {
				return 0, err
			}
			e.done = true
			continue
		}
		retry = max(retry, e.attempts)
	}
	return retry, nil
}

// store inserts batch in one statement; when the statement fails for a row's sake it falls back to one row at
// a time, to store the good rows and charge the failure to the bad one.
func (in *Ingester) store(ctx context.Context, batch []*entry, blocked map[string]bool) error {
	if len(batch) == 0 {
		return nil
	}
	inserted, err := in.insert(ctx, batch)
	if err == nil {
		return in.settle(ctx, batch, inserted)
	}
	perr := classify(err)
	if perr == nil { // only ctx ends an insert without a classified error
		return err
	}
	if len(batch) == 1 {
		batch[0].fail(perr, in.now().UTC())
		return nil
	}
	for _, e := range batch {
		if blocked[e.row.PatientID] {
			continue
		}
		inserted, err := in.insert(ctx, []*entry{e})
		if err == nil {
			if err := in.settle(ctx, []*entry{e}, inserted); err != nil {
				return err
			}
			continue
		}
		perr := classify(err)
		if perr == nil {
			return err
		}
		e.fail(perr, in.now().UTC())
		blocked[e.row.PatientID] = true
	}
	return nil
}

// insert writes the rows of batch, one per request id, retrying transient errors with capped backoff until
// it succeeds, the error is permanent, or ctx ends. With all rows inserted it returns true: every entry's
// record wrote its row, as only a repeat within the batch or a request id stored before could keep one out.
func (in *Ingester) insert(ctx context.Context, batch []*entry) (allInserted bool, err error) {
	// A re-sent report often shares a batch with its first copy. Sending both in one statement relies on the
	// server's unique check within a statement, which not every MySQL-compatible server does; one row per id
	// is also less work.
	rows := make([]store.Report, 0, len(batch))
	seen := make(map[string]bool, len(batch))
	for _, e := range batch {
		if !seen[e.row.RequestID] {
			seen[e.row.RequestID] = true
			rows = append(rows, e.row)
		}
	}
	ctx, span := insertSpan(ctx, batch, len(rows))
	defer span.End()
	for attempt := 1; ; attempt++ {
		start := time.Now()
		n, err := in.rows.Insert(ctx, rows)
		if err == nil {
			if in.observer != nil {
				in.observer.Inserted(len(rows), time.Since(start))
			}
			in.stored.Add(n)
			return n == int64(len(batch)), nil
		}
		if err := in.transientPause(ctx, "insert", err, attempt); err != nil {
			span.SetStatus(codes.Error, "insert failed")
			return false, err
		}
	}
}

// transientPause returns err when it is permanent or ctx has ended, and otherwise counts it as transient,
// logs it (rate-limited) and waits a capped backoff before attempt+1.
func (in *Ingester) transientPause(ctx context.Context, what string, err error, attempt int) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if classify(err) != nil {
		return err
	}
	in.transient.Add(1)
	in.active()
	in.logEvery(what, "%s failed (transient, attempt %d, retrying): %v", what, attempt, err)
	return backoff.Sleep(ctx, backoff.Delay(50*time.Millisecond, in.conf.TransientMaxBackoff, attempt))
}

// settle finishes the entries of a batch whose insert succeeded. When every entry inserted its own row, they
// are stored. Otherwise some request id was stored already (by an earlier record, or by another entry of the
// batch), and the stored rows are read back in one query: an entry whose content hash is the stored row's is
// a duplicate and finished (a retry, as before); one with another hash is a conflict, dead-lettered with
// class conflict without touching the row. The stored status is cached only for entries that wrote their
// row, together with their receipt, so the cache always describes the row.
func (in *Ingester) settle(ctx context.Context, batch []*entry, allInserted bool) error {
	if allInserted {
		for _, e := range batch {
			e.done = true
			e.outcome(outcomeStored)
		}
		in.observeStored(batch)
		in.markStored(ctx, batch)
		return nil
	}
	ids := make([]string, 0, len(batch))
	for _, e := range batch {
		ids = append(ids, e.row.RequestID)
	}
	var stored map[string]reportdb.Stored
	for attempt := 1; ; attempt++ {
		var err error
		if stored, err = in.rows.Lookup(ctx, ids); err == nil && len(stored) < len(uniq(ids)) {
			// The insert succeeded, so every row exists; a server that does not show one yet is waited for
			// like any other transient failure, rather than guessed about.
			err = errors.New("inserted reports not found on read-back")
		}
		if err == nil {
			break
		}
		if err := in.transientPause(ctx, "look up stored reports", err, attempt); err != nil {
			return err
		}
	}
	var wrote, conflicts []*entry
	for _, e := range batch {
		s := stored[e.row.RequestID]
		switch {
		case s.ContentKnown && s.ContentSHA256 != e.row.ContentSHA256:
			conflicts = append(conflicts, e)
			continue
		case s.Topic == e.row.Topic && s.Partition == e.row.Partition && s.Offset == e.row.Offset:
			wrote = append(wrote, e)
			e.outcome(outcomeStored)
		default:
			in.duplicates.Add(1)
			e.outcome(outcomeDuplicate)
		}
		// Same content, or a row from before content hashes whose envelope no longer parses: a duplicate.
		e.done = true
	}
	in.observeStored(wrote)
	// Stored first, so that a conflict in the same batch is what the status cache says last.
	in.markStored(ctx, wrote)
	for _, e := range conflicts {
		if err := in.deadLetter(e.traced(ctx), e.msg, in.conflict(e.msg), ""); err != nil {
			return err
		}
		e.done = true
		in.conflicts.Add(1)
		in.markConflict(ctx, e.row.RequestID)
	}
	return nil
}

// observeStored tells the observer the end-to-end delay of each row entries wrote, with one clock read.
func (in *Ingester) observeStored(entries []*entry) {
	if in.observer == nil || len(entries) == 0 {
		return
	}
	now := time.Now()
	for _, e := range entries {
		in.observer.Stored(now.Sub(e.row.ReceivedAt))
	}
}

// uniq returns the distinct values of ids.
func uniq(ids []string) map[string]bool {
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}

func (in *Ingester) check(row store.Report) *PermanentError {
	if in.catalog == nil || in.catalog[row.QuestionnaireID+"@"+row.QuestionnaireVersion] {
		return nil
	}
	return &PermanentError{Message: fmt.Sprintf("questionnaire %s version %s is not in the catalogue", row.QuestionnaireID, row.QuestionnaireVersion)}
}
