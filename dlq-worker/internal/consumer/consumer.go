// Package consumer archives the dead-letter topic into MySQL.
//
// Guarantee (at least once into the archive): a record's offset is committed only after its row is in
// dead_letters. A crash between the insert and the commit makes the record come back, and the insert is
// idempotent on the record's own topic, partition and offset, so it is archived exactly once. A record that
// cannot be inserted for a transient reason (MySQL away, a deadlock, a lock wait) is retried, never skipped:
// the consumer stalls rather than lose a dead letter. A record the archive cannot hold as it is, or that MySQL
// refuses for a permanent reason (store.Refusal), is archived degraded instead (see Decode and Refused), so
// one bad record never holds up the ones behind it.
package consumer

import (
	"github.com/epro-intake/common/backoff"

	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/zeromicro/go-zero/core/logx"

	"github.com/epro-intake/common/producer"
	"github.com/epro-intake/dlq-worker/internal/config"
	"github.com/epro-intake/dlq-worker/internal/store"
)

// Archive stores a decoded dead letter; *store.DeadLetters implements it.
type Archive interface {
	Insert(ctx context.Context, dl store.DeadLetter) (id uint64, inserted bool, err error)
}

// Observer is told about every newly archived dead letter, and about each one archived degraded besides
// (metrics); nil is allowed.
type Observer interface {
	Ingested(errorClass string)
	Degraded(errorClass string)
}

// DeadLetterConsumer is a service.Service: Start blocks until Stop.
type DeadLetterConsumer struct {
	conf    config.ConsumerConf
	archive Archive
	obs     Observer
	reader  *kafka.Reader

	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	started atomic.Bool
	once    sync.Once
}

// New returns a consumer for c, or an error naming each zero or inconsistent setting of c: the defaults are
// the config tags, not filled in here. It connects on Start.
func New(c config.ConsumerConf, archive Archive, obs Observer) (*DeadLetterConsumer, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("dead-letter consumer config: %w", err)
	}
	start := kafka.FirstOffset
	if c.StartOffset == "last" {
		start = kafka.LastOffset
	}
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:     producer.SplitBrokers(c.Brokers),
		GroupID:     c.Group,
		Topic:       c.Topic,
		StartOffset: start,
		// 0 makes CommitMessages synchronous: it returns after the broker stored the offset. kafka-go's
		// default is 0 as well; a periodic commit would decouple "committed" from "archived".
		CommitInterval:    0,
		MinBytes:          c.MinBytes,
		MaxBytes:          c.MaxBytes,
		MaxWait:           c.MaxWait,
		SessionTimeout:    c.SessionTimeout,
		RebalanceTimeout:  c.RebalanceTimeout,
		HeartbeatInterval: c.HeartbeatInterval,
		// kafka-go's default of 10s between retries after a fetch error delays archiving for no reason.
		ReadBackoffMin: 100 * time.Millisecond,
		ReadBackoffMax: c.MaxBackoff,
		ErrorLogger:    kafka.LoggerFunc(func(msg string, args ...any) { logx.Errorf("kafka reader: "+msg, args...) }),
	})
	ctx, cancel := context.WithCancel(context.Background())
	return &DeadLetterConsumer{conf: c, archive: archive, obs: obs, reader: r, ctx: ctx, cancel: cancel, done: make(chan struct{})}, nil
}

// Start reads, archives and commits records one by one until Stop.
func (c *DeadLetterConsumer) Start() {
	if !c.started.CompareAndSwap(false, true) {
		return
	}
	defer close(c.done)
	logx.Infof("archiving %s as group %s", c.conf.Topic, c.conf.Group)
	for fetchFailures := 0; ; {
		m, err := c.reader.FetchMessage(c.ctx)
		if err != nil {
			if c.ctx.Err() != nil {
				return
			}
			fetchFailures++
			logx.Errorf("fetch dead letter (attempt %d): %v", fetchFailures, err)
			if backoff.Sleep(c.ctx, backoff.Delay(100*time.Millisecond, c.conf.MaxBackoff, fetchFailures)) != nil {
				return
			}
			continue
		}
		fetchFailures = 0
		if !c.archiveRecord(m) {
			return
		}
		// A failed commit loses nothing: the next commit on this partition covers this offset, and if the
		// partition moved, its new owner re-reads the record and the insert finds the row already there.
		if err := c.reader.CommitMessages(c.ctx, m); err != nil && c.ctx.Err() == nil {
			logx.Errorf("commit %s/%d@%d: %v", m.Topic, m.Partition, m.Offset, err)
		}
	}
}

// archiveRecord inserts m's row, retrying transient failures until it succeeds; false means the consumer is
// stopping. A permanent refusal moves to the next, plainer form of the row: the degraded row with the raw
// bytes, then the one with only their SHA-256. If MySQL refuses even that, the database itself is wrong
// (the schema, a trigger) and the record is retried like a transient failure.
func (c *DeadLetterConsumer) archiveRecord(m kafka.Message) bool {
	dl := Decode(m, time.Now())
	form := 0
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(c.ctx, c.conf.InsertTimeout)
		id, inserted, err := c.archive.Insert(ctx, dl)
		cancel()
		if err == nil {
			if !inserted {
				return true
			}
			if dl.Degraded {
				logx.Errorf("archived dead letter %d from %s/%d@%d class=%s DEGRADED: %s", id, m.Topic, m.Partition,
					m.Offset, dl.ErrorClass, dl.DegradedReason)
			} else {
				logx.Infof("archived dead letter %d from %s/%d@%d class=%s", id, m.Topic, m.Partition, m.Offset, dl.ErrorClass)
			}
			if c.obs != nil {
				c.obs.Ingested(dl.ErrorClass)
				if dl.Degraded {
					c.obs.Degraded(dl.ErrorClass)
				}
			}
			return true
		}
		if c.ctx.Err() != nil {
			return false
		}
		// A refusal is logged by its number only: MySQL's message may quote the refused bytes.
		if why, permanent := store.Refusal(err); permanent {
			if form < 2 {
				form++
				logx.Errorf("archive %s/%d@%d refused for good (%s): archiving it degraded", m.Topic, m.Partition, m.Offset, why)
				dl = Refused(m, dl, why, form == 1)
				attempt = 0
				continue
			}
			err = errors.New(why)
		}
		logx.Errorf("archive %s/%d@%d (attempt %d, not committed, retrying): %v", m.Topic, m.Partition, m.Offset, attempt, err)
		if backoff.Sleep(c.ctx, backoff.Delay(100*time.Millisecond, c.conf.MaxBackoff, attempt)) != nil {
			return false
		}
	}
}

// Stop ends Start and leaves the group. It is safe to call more than once.
func (c *DeadLetterConsumer) Stop() {
	c.once.Do(func() {
		c.cancel()
		if c.started.Load() {
			<-c.done
		}
		if err := c.reader.Close(); err != nil && !errors.Is(err, context.Canceled) {
			logx.Errorf("close dead-letter reader: %v", err)
		}
	})
}
