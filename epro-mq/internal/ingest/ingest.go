// Package ingest turns report records into rows. Every record handed to HandleBatch ends up stored (or found
// stored already), or acknowledged on the dead-letter topic; until then HandleBatch keeps trying, and the
// consumer does not commit the record.
//
// By concern: decode.go turns records into rows and sets poison aside; fastpath.go is the Redis status
// cache (skip ids known stored, mark stored and dead-lettered); retry.go is the insert rounds, the
// row-by-row fallback and transient retries; classify.go says which errors are about the row;
// deadletter.go builds and writes dead letters; recover.go learns, after a restart or rebalance, what a
// previous owner already dead-lettered.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"github.com/zeromicro/go-zero/core/logx"

	"github.com/epro-intake/common/backoff"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/reportdb"
	"github.com/epro-intake/epro-mq/internal/store"
)

// Conf shapes retries and dead-lettering.
type Conf struct {
	// Group is the consumer group, written to dead-letter records.
	Group string
	// DLQTopic receives records that cannot be stored.
	DLQTopic string
	// MaxAttempts is how many tries a permanent failure gets before it is dead-lettered.
	MaxAttempts int
	// InitialBackoff and MaxBackoff bound the exponential backoff (with jitter) between tries of a
	// permanent failure.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// TransientMaxBackoff caps the backoff between retries of transient failures, which never end in the
	// dead-letter topic.
	TransientMaxBackoff time.Duration
	// RedisTimeout bounds each fast-path Redis call; Redis being slow must not slow storing down.
	RedisTimeout time.Duration
	// Brokers, when set, let Recover read the dead-letter topic; without them Recover does nothing.
	Brokers []string
	// Questionnaires, when not empty, is the catalogue of accepted "questionnaireId@version" pairs; a report
	// of any other version fails permanently until the catalogue is fixed.
	Questionnaires []string
}

// Inserter writes rows and reads back what is stored under their request ids; *store.Reports implements it.
type Inserter interface {
	// Insert writes rows, leaving request ids stored already as they are, and returns how many it inserted.
	Insert(ctx context.Context, rows []store.Report) (int64, error)
	// Lookup returns the stored rows of ids.
	Lookup(ctx context.Context, ids []string) (map[string]reportdb.Stored, error)
}

// Sender writes records with acks=all; *producer.Producer implements it.
type Sender interface {
	Send(ctx context.Context, msgs ...kafka.Message) error
}

// Stats counts outcomes since start.
type Stats struct {
	// SkippedByRedis counts records Redis knew as stored and MySQL confirmed: not inserted again.
	Stored, SkippedByRedis, DeadLettered, TransientRetries int64
	// StaleMarkers counts records Redis knew as stored whose row MySQL did not confirm (a database restored
	// from a backup has lost it): they went to the insert, which stores them again.
	StaleMarkers int64
	// Conflicts counts records dead-lettered because their request id is stored with other content.
	Conflicts int64
	// PermanentRetryRounds counts the backoff waits HandleBatch made because rows of a batch had failed
	// permanently and had attempts left; one wait retries all such rows of the batch together. It counts
	// neither failed rows nor dead letters.
	PermanentRetryRounds int64
	// Duplicates counts records the insert found stored already with the same content (a re-sent report, or
	// a re-read after a restart): finished without a new row. SkippedByRedis are duplicates too, found earlier.
	Duplicates int64
	// DeadLetteredByClass splits DeadLettered by error class (report.ErrorClass*); every class is present.
	DeadLetteredByClass map[string]int64
}

// Observer is told what storing costs, for metrics. It runs on the storing path, so its methods must be
// cheap and must not block: they are called once per batch or statement, and Stored once per written row.
type Observer interface {
	// Batch is called once per HandleBatch with the number of records handed over.
	Batch(records int)
	// Inserted is called after each successful insert statement of rows rows, which took d.
	Inserted(rows int, d time.Duration)
	// Stored is called for each row written, with the time from the envelope's receivedAt to now.
	Stored(delay time.Duration)
}

// deadLetterClasses are the error classes a dead letter can carry, in the order of deadLetteredByClass.
var deadLetterClasses = [...]string{report.ErrorClassPoison, report.ErrorClassPermanent, report.ErrorClassConflict}

// Ingester is the consumer's BatchHandler.
type Ingester struct {
	conf    Conf
	rows    Inserter
	dlq     Sender
	redis   redis.UniversalClient // nil: no fast path
	catalog map[string]bool
	now     func() time.Time

	stored, skipped, staleMarkers, deadLettered, transient, permanentRetryRounds, conflicts atomic.Int64
	duplicates                                                                              atomic.Int64
	deadLetteredByClass                                                                     [len(deadLetterClasses)]atomic.Int64
	// activity is when a retry (transient, permanent round or dead-letter write) last began, in Unix
	// nanoseconds: a batch that is retrying is working, not stuck (see LastActivity).
	activity atomic.Int64
	observer Observer // nil: nothing observes
	logMu    sync.Mutex
	lastLog  map[string]time.Time

	deadMu sync.Mutex
	dead   map[topicPartitionOffset]bool // found by Recover: dead-lettered, offset not yet committed
}

// New returns an Ingester. rdb may be nil. Every setting of c must be given (epro-mq's config states the
// defaults); a zero one is refused, never replaced.
func New(c Conf, rows Inserter, dlq Sender, rdb redis.UniversalClient) (*Ingester, error) {
	var errs []error
	if c.Group == "" || c.DLQTopic == "" {
		errs = append(errs, errors.New("Group and DLQTopic must be set"))
	}
	if c.MaxAttempts <= 0 || c.InitialBackoff <= 0 || c.MaxBackoff < c.InitialBackoff || c.TransientMaxBackoff <= 0 {
		errs = append(errs, errors.New("need MaxAttempts > 0, 0 < InitialBackoff <= MaxBackoff and TransientMaxBackoff > 0"))
	}
	if c.RedisTimeout <= 0 {
		errs = append(errs, errors.New("RedisTimeout must be positive"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("ingest config: %w", err)
	}
	in := &Ingester{conf: c, rows: rows, dlq: dlq, redis: rdb, now: time.Now, lastLog: map[string]time.Time{},
		dead: map[topicPartitionOffset]bool{}}
	if len(c.Questionnaires) > 0 {
		in.catalog = map[string]bool{}
		for _, q := range c.Questionnaires {
			in.catalog[q] = true
		}
	}
	return in, nil
}

// Stats returns the counters.
func (in *Ingester) Stats() Stats {
	return Stats{
		Stored: in.stored.Load(), SkippedByRedis: in.skipped.Load(), DeadLettered: in.deadLettered.Load(),
		TransientRetries: in.transient.Load(), PermanentRetryRounds: in.permanentRetryRounds.Load(),
		Conflicts: in.conflicts.Load(), StaleMarkers: in.staleMarkers.Load(), Duplicates: in.duplicates.Load(),
		DeadLetteredByClass: in.deadLettersByClass(),
	}
}

func (in *Ingester) deadLettersByClass() map[string]int64 {
	m := make(map[string]int64, len(deadLetterClasses))
	for i, class := range deadLetterClasses {
		m[class] = in.deadLetteredByClass[i].Load()
	}
	return m
}

// Observe has o told of batches, statements and stored rows from now on. Call it before the first
// HandleBatch.
func (in *Ingester) Observe(o Observer) { in.observer = o }

// LastActivity is when a retry last began (zero if none has): while a batch retries a MySQL outage or a
// dead-letter write it finishes nothing, yet it is not stuck.
func (in *Ingester) LastActivity() time.Time {
	if ns := in.activity.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

func (in *Ingester) active() { in.activity.Store(time.Now().UnixNano()) }

// HandleBatch implements consumer.BatchHandler. It returns nil once every record of msgs is finished:
// stored (or found stored already) or acknowledged on the dead-letter topic. It returns an error only when
// ctx ends first; the consumer then commits none of the unfinished records, and the next owner reads them
// again.
//
// Why it works this way. A record that can never be stored (poison) is dead-lettered before anything else,
// as its first and only attempt. Ids that Redis knows as stored, with the record's own content hash, are
// checked in MySQL with one read for all of them and skipped only when their row is there with that content
// (see skipStored): Redis is only a cache and may outlive rows a database restore took away, and its failure
// costs a dedupe in MySQL and nothing else. A
// record whose request id MySQL holds with other content is a conflict: it is dead-lettered (class
// conflict) at once and the row is left as it is, while one with the same content is a duplicate and counts
// as stored (see settle). The rest are stored in rounds: each
// round sends the unfinished records that may go (see nextRound) to MySQL in one multi-row insert, in
// partition order, because one
// statement per batch is what makes the consumer fast and keeps auto-increment ids in partition order. When
// the insert fails for a row's sake, the round falls back to one row at a time so the good rows are stored
// and only the bad row is charged an attempt. A patient whose report failed in this round has the rest of
// their reports held back until that report is resolved, so a patient's reports are never stored out of
// order. Transient errors (the database, not the row) are retried inside the round without limit and never
// counted, so an outage stalls consumption instead of flooding the dead-letter topic. After a round, a
// record that has failed permanently MaxAttempts times is dead-lettered; if others still have attempts left,
// the whole batch waits one backoff (sized by the most-tried record) and the next round retries all of them
// together, rather than running a timer per record.
func (in *Ingester) HandleBatch(ctx context.Context, msgs []kafka.Message) error {
	if in.observer != nil {
		in.observer.Batch(len(msgs))
	}
	entries, err := in.decodeAll(ctx, msgs)
	if err != nil {
		return err
	}
	defer endSpans(entries)
	in.skipStored(ctx, entries)
	for {
		batch, blocked, pending := in.nextRound(entries)
		if pending == 0 {
			return nil
		}
		if err := in.store(ctx, batch, blocked); err != nil {
			return err
		}
		retry, err := in.deadLetterExhausted(ctx, entries)
		if err != nil {
			return err
		}
		if retry > 0 {
			in.permanentRetryRounds.Add(1)
			in.active()
			if err := backoff.Sleep(ctx, backoff.Delay(in.conf.InitialBackoff, in.conf.MaxBackoff, retry)); err != nil {
				return err
			}
		}
	}
}

// logEvery logs at most once every 5 s per kind, so an outage does not flood the log.
func (in *Ingester) logEvery(kind, format string, args ...any) {
	in.logMu.Lock()
	now := time.Now()
	if now.Sub(in.lastLog[kind]) < 5*time.Second {
		in.logMu.Unlock()
		return
	}
	in.lastLog[kind] = now
	in.logMu.Unlock()
	logx.Errorf(format, args...)
}
