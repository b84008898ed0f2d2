package ingest

import (
	"context"
	"strconv"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/epro-intake/common/tracing"
)

// Spans. Each record gets a process span, a child of the trace context its headers carry (the API's
// producer span, or dlq-worker's replay), which ends when HandleBatch returns and says what became of the
// record (epro.outcome). One insert statement writes the rows of many records, of as many traces, so its
// span links to their process spans instead of having one of them as parent. A dead letter is sent in a
// child span of its record's process span, whose context the dead letter's headers carry. Attributes name
// topics, partitions, offsets, counts and outcomes only, never a request id, patient id or content.

// Values of epro.outcome.
const (
	outcomeStored       = "stored"
	outcomeDuplicate    = "duplicate"
	outcomeDeadLettered = "dead-lettered"
)

func outcomeAttr(o string) attribute.KeyValue { return attribute.String("epro.outcome", o) }

// processSpan starts m's process span under the context of m's headers, beside ctx's deadline.
func processSpan(ctx context.Context, m kafka.Message) oteltrace.Span {
	_, span := tracing.Tracer().Start(tracing.Extract(ctx, m.Headers), "process "+m.Topic,
		oteltrace.WithSpanKind(oteltrace.SpanKindConsumer),
		oteltrace.WithAttributes(
			attribute.String("messaging.system", "kafka"),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.destination.name", m.Topic),
			attribute.String("messaging.destination.partition.id", strconv.Itoa(m.Partition)),
			attribute.Int64("messaging.kafka.offset", m.Offset),
		))
	return span
}

// sendSpan starts a producer span for a write to topic.
func sendSpan(ctx context.Context, topic string) (context.Context, oteltrace.Span) {
	return tracing.Tracer().Start(ctx, "send "+topic, oteltrace.WithSpanKind(oteltrace.SpanKindProducer),
		oteltrace.WithAttributes(
			attribute.String("messaging.system", "kafka"),
			attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.destination.name", topic),
		))
}

// insertSpan starts the span of one insert of rows rows for batch, linked to each entry's process span.
func insertSpan(ctx context.Context, batch []*entry, rows int) (context.Context, oteltrace.Span) {
	links := make([]oteltrace.Link, 0, len(batch))
	for _, e := range batch {
		if e.span != nil {
			links = append(links, oteltrace.Link{SpanContext: e.span.SpanContext()})
		}
	}
	return tracing.Tracer().Start(ctx, "INSERT reports", oteltrace.WithSpanKind(oteltrace.SpanKindClient),
		oteltrace.WithLinks(links...),
		oteltrace.WithAttributes(
			attribute.String("db.system.name", "mysql"),
			attribute.String("db.operation.name", "INSERT"),
			attribute.String("db.collection.name", "reports"),
			attribute.Int("db.operation.batch.size", rows),
		))
}

// traced returns ctx with e's process span, for the spans started on e's behalf.
func (e *entry) traced(ctx context.Context) context.Context {
	if e.span == nil {
		return ctx
	}
	return oteltrace.ContextWithSpan(ctx, e.span)
}

func (e *entry) outcome(o string) {
	if e.span != nil {
		e.span.SetAttributes(outcomeAttr(o))
	}
}

// endSpan ends a process span; finished says whether its record was.
func endSpan(span oteltrace.Span, finished bool) {
	if !finished {
		span.SetStatus(codes.Error, "not finished; the next owner of the partition reads it again")
	}
	span.End()
}

// endSpans ends the process spans of entries.
func endSpans(entries []*entry) {
	for _, e := range entries {
		if e.span != nil {
			endSpan(e.span, e.done)
		}
	}
}
