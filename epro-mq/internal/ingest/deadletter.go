package ingest

import (
	"context"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/zeromicro/go-zero/core/logx"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/epro-intake/common/backoff"
	"github.com/epro-intake/common/deadletter"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/tracing"
)

// poison describes a record that can never be stored as it is: dead-lettered at once, its first and only
// attempt.
func (in *Ingester) poison(m kafka.Message, reason string) deadletter.Failure {
	now := in.now().UTC()
	return in.failure(m, report.ErrorClassPoison, reason, 1, now, now)
}

// exhausted describes an entry that failed permanently on each of its attempts.
func (in *Ingester) exhausted(e *entry) deadletter.Failure {
	return in.failure(e.msg, report.ErrorClassPermanent, e.lastErr.Message, e.attempts, e.first, e.last)
}

// conflict describes a record whose request id is stored with other content: dead-lettered at once, for
// review. Replaying it cannot succeed while the id is taken.
func (in *Ingester) conflict(m kafka.Message) deadletter.Failure {
	now := in.now().UTC()
	return in.failure(m, report.ErrorClassConflict, "request id already stored with other content; the stored report is unchanged", 1, now, now)
}

func (in *Ingester) failure(m kafka.Message, class, reason string, attempts int, first, last time.Time) deadletter.Failure {
	return deadletter.Failure{
		Class: class, Message: reason, Attempts: attempts, FirstFailure: first, LastFailure: last,
		OriginalTopic: m.Topic, OriginalPartition: m.Partition, OriginalOffset: m.Offset, OriginalTimestamp: m.Time,
		ConsumerGroup: in.conf.Group,
	}
}

// deadLetter writes m to the dead-letter topic with acks=all and the headers describing f, after m's own,
// retrying until it is acknowledged or ctx ends. The caller counts m as finished only when this returns nil.
// requestID, when known, is marked dead-lettered in the Redis status cache afterwards.
func (in *Ingester) deadLetter(ctx context.Context, m kafka.Message, f deadletter.Failure, requestID string) error {
	oteltrace.SpanFromContext(ctx).SetAttributes(outcomeAttr(outcomeDeadLettered), attribute.String("epro.dead_letter.class", f.Class))
	if in.deadLetteredBefore(m) {
		logx.Infof("%s/%d@%d was dead-lettered before a restart or rebalance; not writing it again", m.Topic, m.Partition, m.Offset)
		return nil
	}
	ctx, span := sendSpan(ctx, in.conf.DLQTopic)
	defer span.End()
	// The dead letter continues the record's trace as a child of the send span; dlq-worker's replay
	// continues it from there.
	headers := deadletter.Headers(tracing.Inject(ctx, m.Headers), f)
	dl := kafka.Message{Topic: in.conf.DLQTopic, Key: m.Key, Value: m.Value, Headers: headers}
	for attempt := 1; ; attempt++ {
		err := in.dlq.Send(ctx, dl)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			span.SetStatus(codes.Error, "dead-letter write not acknowledged")
			return fmt.Errorf("dead-letter %s/%d@%d: %w", m.Topic, m.Partition, m.Offset, ctx.Err())
		}
		in.active()
		in.logEvery("dlq", "dead-letter write failed (attempt %d, retrying; offset not committed): %v", attempt, err)
		if err := backoff.Sleep(ctx, backoff.Delay(100*time.Millisecond, in.conf.TransientMaxBackoff, attempt)); err != nil {
			return err
		}
	}
	in.deadLettered.Add(1)
	for i, class := range deadLetterClasses {
		if class == f.Class {
			in.deadLetteredByClass[i].Add(1)
		}
	}
	logx.Infof("dead-lettered %s/%d@%d class=%s attempts=%d reason=%q", m.Topic, m.Partition, m.Offset, f.Class, f.Attempts, deadletter.Truncate(f.Message))
	in.markDeadLettered(ctx, requestID)
	return nil
}
