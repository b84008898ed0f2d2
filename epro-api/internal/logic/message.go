package logic

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"github.com/zeromicro/go-zero/core/logx"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/status"
	"github.com/epro-intake/common/tracing"
	"github.com/epro-intake/epro-api/internal/metrics"
	"github.com/epro-intake/epro-api/internal/svc"
)

// Values of BatchItemResult.Status and AcceptedResp.Status.
const (
	statusAccepted = status.Accepted
	// StatusDuplicate: a retry of a report accepted before; the receipt is that report's. The handler answers
	// it with 200 rather than 202, because nothing new was accepted.
	StatusDuplicate   = "duplicate"
	statusRejected    = "rejected"
	statusConflict    = "conflict"
	statusUnavailable = "unavailable"
)

// reportMessage is the Kafka record for env: keyed by patient so that one patient's reports stay in order on
// one partition, and carrying the request id, schema version and the caller's trace context as headers.
func reportMessage(ctx context.Context, topic string, env report.Envelope) (kafka.Message, error) {
	value, err := json.Marshal(env)
	if err != nil {
		return kafka.Message{}, fmt.Errorf("marshal envelope: %w", err)
	}
	headers := []kafka.Header{
		{Key: report.HeaderRequestID, Value: []byte(env.RequestID)},
		{Key: report.HeaderSchemaVersion, Value: []byte(strconv.Itoa(env.SchemaVersion))},
	}
	return kafka.Message{Topic: topic, Key: []byte(env.PatientID), Value: value, Headers: tracing.Inject(ctx, headers)}, nil
}

// formatTime writes times the way encoding/json writes the envelope's receivedAt, so the 202 and the record
// agree to the nanosecond.
func formatTime(t time.Time) string {
	return t.UTC().Format(time.RFC3339Nano)
}

// produce sends msgs in a producer span, whose context replaces the trace headers of each record, and
// observes how long the Send took (epro_api_produce_duration_seconds).
func produce(ctx context.Context, svcCtx *svc.ServiceContext, msgs ...kafka.Message) error {
	ctx, span := tracing.Tracer().Start(ctx, "send "+svcCtx.Config.Topic, oteltrace.WithSpanKind(oteltrace.SpanKindProducer),
		oteltrace.WithAttributes(
			attribute.String("messaging.system", "kafka"),
			attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.destination.name", svcCtx.Config.Topic),
			attribute.Int("messaging.batch.message_count", len(msgs)),
		))
	defer span.End()
	for i := range msgs {
		msgs[i].Headers = tracing.Inject(ctx, msgs[i].Headers)
	}
	start := time.Now()
	err := svcCtx.Producer.Send(ctx, msgs...)
	svcCtx.Metrics.Produced(time.Since(start), err)
	if err != nil {
		span.SetStatus(codes.Error, "produce failed")
	}
	return err
}

// countAccepted counts env as accepted and observes its upload delay, submittedAt to receivedAt.
func countAccepted(svcCtx *svc.ServiceContext, env report.Envelope) {
	svcCtx.Metrics.Report(metrics.OutcomeAccepted)
	// Validate parsed it before; a failure here cannot happen, and would only cost the observation.
	if at, err := report.ParseSubmittedAt(env.SubmittedAt); err == nil {
		svcCtx.Metrics.UploadDelay(at, env.ReceivedAt)
	}
}

func unavailable(svcCtx *svc.ServiceContext, message string) *errcode.Error {
	return errcode.Unavailable(message, svcCtx.Config.RetryAfter)
}

// markAccepted caches "accepted" and the receipt of each report (by request id), best effort: Kafka already
// holds the reports, so a Redis failure is logged and the client still gets its 202. NX keeps a status the
// consumer may already have written, and the receipt it wrote of the stored report (or the first receipt of
// a request id). The write outlives a client that hung up, because the report was taken all the same.
//
// After the 202 is decided, and off the request's path: the writes are queued to svcCtx.StatusWrites, which
// pipelines the writes of concurrent requests (each pipeline within Redis.Timeout). Waiting for Redis here
// put its round trip (and any Redis stall) into every answer. When the queue is full (Redis slower than
// intake) the writes are not made, and the request ids are logged: a retry of such a report is then judged by
// MySQL or, after the receipt's absence made it look new, by epro-mq.
func markAccepted(ctx context.Context, svcCtx *svc.ServiceContext, receipts map[string]status.Receipt) {
	if len(receipts) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	ttl := int64(status.TTL / time.Second)
	ids := make([]string, 0, len(receipts))
	cmds := make([]redis.Cmder, 0, 2*len(receipts))
	for id, receipt := range receipts {
		ids = append(ids, id)
		// The receipt first: whoever sees the status can also read the receipt. SET NX EX is SETNX with a TTL.
		cmds = append(cmds,
			redis.NewStatusCmd(ctx, "set", status.ReceiptKey(id), receipt.Marshal(), "ex", ttl, "nx"),
			redis.NewStatusCmd(ctx, "set", status.Key(id), status.Accepted, "ex", ttl, "nx"))
	}
	queued := svcCtx.StatusWrites.Go(cmds, func() {
		for _, cmd := range cmds {
			// Nil is NX's answer when the key exists.
			if err := cmd.Err(); err != nil && !errors.Is(err, redis.Nil) {
				logx.WithContext(ctx).Errorw("cache accepted status", logx.Field("requestIds", ids), logx.Field("error", err.Error()))
				return
			}
		}
	})
	if !queued {
		logx.WithContext(ctx).Errorw("cache accepted status: write queue full, not cached", logx.Field("requestIds", ids))
	}
}
