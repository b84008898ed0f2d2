package ingest

import (
	"context"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/backoff"
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
			if err := in.deadLetter(ctx, e.msg, in.exhausted(e), e.row.RequestID); err != nil {
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
	err := in.insert(ctx, batch)
	if err == nil {
		in.markStored(ctx, batch)
		return nil
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
		err := in.insert(ctx, []*entry{e})
		if err == nil {
			in.markStored(ctx, []*entry{e})
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

// insert writes rows, retrying transient errors with capped backoff until it succeeds, the error is
// permanent, or ctx ends.
func (in *Ingester) insert(ctx context.Context, batch []*entry) error {
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
	for attempt := 1; ; attempt++ {
		err := in.rows.Insert(ctx, rows)
		if err == nil {
			for _, e := range batch {
				e.done = true
			}
			in.stored.Add(int64(len(rows)))
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if classify(err) != nil {
			return err
		}
		in.transient.Add(1)
		in.logEvery("insert", "store %d reports failed (transient, attempt %d, retrying): %v", len(rows), attempt, err)
		if err := backoff.Sleep(ctx, backoff.Delay(50*time.Millisecond, in.conf.TransientMaxBackoff, attempt)); err != nil {
			return err
		}
	}
}

func (in *Ingester) check(row store.Report) *PermanentError {
	if in.catalog == nil || in.catalog[row.QuestionnaireID+"@"+row.QuestionnaireVersion] {
		return nil
	}
	return &PermanentError{Message: fmt.Sprintf("questionnaire %s version %s is not in the catalogue", row.QuestionnaireID, row.QuestionnaireVersion)}
}
