package replay

import (
	"context"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/epro-intake/common/tracing"
)

// sendSpan starts the producer span of a replay and gives msg its context. The span continues the trace the
// dead letter carries (the report's, from the API through epro-mq's dead-lettering), so that epro-mq's store
// of the replay joins that trace; the operator's request that asked for the replay is a link, not the parent.
// Its attributes name the topic only: no dead letter id, request id or patient.
func sendSpan(ctx context.Context, msg *kafka.Message) oteltrace.Span {
	opts := []oteltrace.SpanStartOption{
		oteltrace.WithSpanKind(oteltrace.SpanKindProducer),
		oteltrace.WithAttributes(
			attribute.String("messaging.system", "kafka"),
			attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.destination.name", msg.Topic),
			attribute.Bool("epro.replay", true),
		),
	}
	if caller := oteltrace.SpanContextFromContext(ctx); caller.IsValid() {
		opts = append(opts, oteltrace.WithLinks(oteltrace.Link{SpanContext: caller}))
	}
	// A parent of its own: the caller's span (the ops request) gives way to the dead letter's context.
	parent := tracing.Extract(oteltrace.ContextWithSpanContext(ctx, oteltrace.SpanContext{}), msg.Headers)
	sctx, span := tracing.Tracer().Start(parent, "send "+msg.Topic, opts...)
	msg.Headers = tracing.Inject(sctx, msg.Headers)
	return span
}
