// Package ingest turns report records into rows. Every record handed to HandleBatch ends up stored (or found
// stored already), or acknowledged on the dead-letter topic; until then HandleBatch keeps trying, and the
// consumer does not commit the record.
package ingest

import (
	"github.com/epro-intake/common/backoff"

	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"github.com/zeromicro/go-zero/core/logx"

	"github.com/epro-intake/common/deadletter"
	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/status"
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
	// RecoverTimeout bounds one Recover call.
	RecoverTimeout time.Duration
	// Questionnaires, when not empty, is the catalogue of accepted "questionnaireId@version" pairs; a report
	// of any other version fails permanently until the catalogue is fixed.
	Questionnaires []string
}

// Inserter writes rows; *store.Reports implements it.
type Inserter interface {
	Insert(ctx context.Context, rows []store.Report) error
}

// Sender writes records with acks=all; *producer.Producer implements it.
type Sender interface {
	Send(ctx context.Context, msgs ...kafka.Message) error
}

// Stats counts outcomes since start.
type Stats struct {
	Stored, SkippedByRedis, DeadLettered, TransientRetries, PermanentFailures int64
}

// Ingester is the consumer's BatchHandler.
type Ingester struct {
	conf    Conf
	rows    Inserter
	dlq     Sender
	redis   redis.UniversalClient // nil: no fast path
	catalog map[string]bool
	now     func() time.Time

	stored, skipped, deadLettered, transient, permanent atomic.Int64
	logMu                                               sync.Mutex
	lastLog                                             map[string]time.Time

	deadMu sync.Mutex
	dead   map[topicPartitionOffset]bool // found by Recover: dead-lettered, offset not yet committed
}

// New returns an Ingester. rdb may be nil.
func New(c Conf, rows Inserter, dlq Sender, rdb redis.UniversalClient) *Ingester {
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 5
	}
	if c.InitialBackoff <= 0 {
		c.InitialBackoff = 200 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 5 * time.Second
	}
	if c.TransientMaxBackoff <= 0 {
		c.TransientMaxBackoff = 5 * time.Second
	}
	if c.RedisTimeout <= 0 {
		c.RedisTimeout = 200 * time.Millisecond
	}
	if c.RecoverTimeout <= 0 {
		c.RecoverTimeout = time.Minute
	}
	in := &Ingester{conf: c, rows: rows, dlq: dlq, redis: rdb, now: time.Now, lastLog: map[string]time.Time{},
		dead: map[topicPartitionOffset]bool{}}
	if len(c.Questionnaires) > 0 {
		in.catalog = map[string]bool{}
		for _, q := range c.Questionnaires {
			in.catalog[q] = true
		}
	}
	return in
}

// Stats returns the counters.
func (in *Ingester) Stats() Stats {
	return Stats{
		Stored: in.stored.Load(), SkippedByRedis: in.skipped.Load(), DeadLettered: in.deadLettered.Load(),
		TransientRetries: in.transient.Load(), PermanentFailures: in.permanent.Load(),
	}
}

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

// HandleBatch implements consumer.BatchHandler.
func (in *Ingester) HandleBatch(ctx context.Context, msgs []kafka.Message) error {
	entries := make([]*entry, 0, len(msgs))
	for _, m := range msgs {
		row, err := decode(m)
		if err != nil {
			now := in.now().UTC()
			if err := in.deadLetter(ctx, m, report.ErrorClassPoison, err.Error(), 1, now, now, ""); err != nil {
				return err
			}
			continue
		}
		entries = append(entries, &entry{msg: m, row: row})
	}
	in.skipStored(ctx, entries)
	for {
		pending := 0
		blocked := map[string]bool{} // patients with an earlier report still failing: keep their order
		var batch []*entry
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
		if pending == 0 {
			return nil
		}
		if err := in.store(ctx, batch, blocked); err != nil {
			return err
		}
		retry := 0
		for _, e := range entries {
			if e.done || e.lastErr == nil {
				continue
			}
			if e.attempts >= in.conf.MaxAttempts {
				if err := in.deadLetter(ctx, e.msg, report.ErrorClassPermanent, e.lastErr.Message, e.attempts, e.first, e.last, e.row.RequestID); err != nil {
					return err
				}
				e.done = true
				continue
			}
			retry = max(retry, e.attempts)
		}
		if retry > 0 {
			in.permanent.Add(1)
			if err := backoff.Sleep(ctx, backoff.Delay(in.conf.InitialBackoff, in.conf.MaxBackoff, retry)); err != nil {
				return err
			}
		}
	}
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

// skipStored marks entries whose request id Redis knows as stored. Redis is only a cache of the reports
// table: when it fails, every entry goes to MySQL, whose unique key dedupes.
func (in *Ingester) skipStored(ctx context.Context, entries []*entry) {
	if in.redis == nil || len(entries) == 0 {
		return
	}
	keys := make([]string, len(entries))
	for i, e := range entries {
		keys[i] = status.Key(e.row.RequestID)
	}
	rctx, cancel := context.WithTimeout(ctx, in.conf.RedisTimeout)
	defer cancel()
	vals, err := in.redis.MGet(rctx, keys...).Result()
	if err != nil {
		in.logEvery("redis", "dedupe fast path unavailable, relying on MySQL: %v", err)
		return
	}
	for i, v := range vals {
		if s, ok := v.(string); ok && s == status.Stored {
			entries[i].done = true
			in.skipped.Add(1)
		}
	}
}

// markStored records in Redis that the entries are committed to MySQL. It runs only after the commit, so
// Redis never claims a report is stored when it is not.
func (in *Ingester) markStored(ctx context.Context, batch []*entry) {
	if in.redis == nil {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, in.conf.RedisTimeout)
	defer cancel()
	pipe := in.redis.Pipeline()
	for _, e := range batch {
		pipe.Set(rctx, status.Key(e.row.RequestID), status.Stored, status.TTL)
	}
	if _, err := pipe.Exec(rctx); err != nil {
		in.logEvery("redis", "mark %d reports stored in redis: %v", len(batch), err)
	}
}

// deadLetter writes m to the dead-letter topic with acks=all, retrying until it is acknowledged or ctx ends.
// The caller counts m as finished only when this returns nil.
func (in *Ingester) deadLetter(ctx context.Context, m kafka.Message, class, reason string, attempts int, first, last time.Time, requestID string) error {
	if in.deadLetteredBefore(m) {
		logx.Infof("%s/%d@%d was dead-lettered before a restart or rebalance; not writing it again", m.Topic, m.Partition, m.Offset)
		return nil
	}
	f := deadletter.Failure{
		Class: class, Message: reason, Attempts: attempts, FirstFailure: first, LastFailure: last,
		OriginalTopic: m.Topic, OriginalPartition: m.Partition, OriginalOffset: m.Offset, OriginalTimestamp: m.Time,
		ConsumerGroup: in.conf.Group,
	}
	headers := deadletter.Headers(m.Headers, f)
	dl := kafka.Message{Topic: in.conf.DLQTopic, Key: m.Key, Value: m.Value, Headers: headers}
	for attempt := 1; ; attempt++ {
		err := in.dlq.Send(ctx, dl)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("dead-letter %s/%d@%d: %w", m.Topic, m.Partition, m.Offset, ctx.Err())
		}
		in.logEvery("dlq", "dead-letter write failed (attempt %d, retrying; offset not committed): %v", attempt, err)
		if err := backoff.Sleep(ctx, backoff.Delay(100*time.Millisecond, in.conf.TransientMaxBackoff, attempt)); err != nil {
			return err
		}
	}
	in.deadLettered.Add(1)
	logx.Infof("dead-lettered %s/%d@%d class=%s attempts=%d reason=%q", m.Topic, m.Partition, m.Offset, class, attempts, deadletter.Truncate(reason))
	if in.redis != nil && requestID != "" {
		rctx, cancel := context.WithTimeout(ctx, in.conf.RedisTimeout)
		defer cancel()
		if err := in.redis.Set(rctx, status.Key(requestID), status.DeadLettered, status.TTL).Err(); err != nil {
			in.logEvery("redis", "mark report dead-lettered in redis: %v", err)
		}
	}
	return nil
}

// decode turns a record into a row, or says why it never can be.
func decode(m kafka.Message) (store.Report, error) {
	env, err := report.ParseEnvelope(m.Value)
	if err == nil {
		err = env.Validate()
	}
	if err != nil {
		var ee *errcode.Error
		if errors.As(err, &ee) {
			return store.Report{}, fmt.Errorf("invalid envelope: %s", ee.Error())
		}
		return store.Report{}, errors.New("invalid envelope")
	}
	if string(m.Key) != env.PatientID {
		return store.Report{}, errors.New("record key is not the envelope's patientId")
	}
	for _, h := range m.Headers {
		if h.Key == report.HeaderRequestID && string(h.Value) != env.RequestID {
			return store.Report{}, errors.New("x-request-id header does not match the envelope's requestId")
		}
	}
	at, err := report.ParseSubmittedAt(env.SubmittedAt)
	if err != nil {
		return store.Report{}, errors.New("invalid submittedAt")
	}
	_, offset := at.Zone()
	return store.Report{
		RequestID:              env.RequestID,
		PatientID:              env.PatientID,
		TrialID:                env.TrialID,
		QuestionnaireID:        env.QuestionnaireID,
		QuestionnaireVersion:   env.QuestionnaireVersion,
		SubmittedAt:            at.UTC(),
		SubmittedOffsetMinutes: offset / 60,
		ReceivedAt:             env.ReceivedAt.UTC(),
		Payload:                m.Value,
		Topic:                  m.Topic,
		Partition:              m.Partition,
		Offset:                 m.Offset,
	}, nil
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
