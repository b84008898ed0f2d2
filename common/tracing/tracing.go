// Package tracing carries W3C Trace Context across Kafka: from a context into a record's headers and back.
//
// Guarantees: Inject writes exactly the traceparent and tracestate headers of ctx's span in place of any the
// record carried, and keeps every other header in order; Extract reads only those two headers (never
// baggage, which has no business on the topics).
//
// Span attributes across the suite name topics, partitions, offsets, counts and outcomes, never a patient id,
// a request id, report content or a token.
package tracing

import (
	"context"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	oteltrace "go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/epro-intake/common/report"
)

// Name is the instrumentation name of the suite's own spans.
const Name = "github.com/epro-intake"

// traceContext is W3C Trace Context rather than the global propagator: the record headers are part of the
// wire contract (report.HeaderTraceparent, report.HeaderTracestate).
var traceContext = propagation.TraceContext{}

// Tracer is the suite's tracer from the global provider: go-zero's when its agent runs, a no-op otherwise.
func Tracer() oteltrace.Tracer { return otel.Tracer(Name) }

// Extract returns ctx with the remote span context of headers' traceparent and tracestate, or ctx itself
// when they carry none that is valid.
func Extract(ctx context.Context, headers []kafka.Header) context.Context {
	carrier := propagation.MapCarrier{}
	for _, h := range headers {
		if h.Key == report.HeaderTraceparent || h.Key == report.HeaderTracestate {
			carrier[h.Key] = string(h.Value)
		}
	}
	return traceContext.Extract(ctx, carrier)
}

// Inject returns headers, in a new slice, with the traceparent and tracestate of ctx's span in place of any
// they carried (at the same position) or after them, and without those ctx has none of.
func Inject(ctx context.Context, headers []kafka.Header) []kafka.Header {
	carrier := propagation.MapCarrier{}
	traceContext.Inject(ctx, carrier)
	out := make([]kafka.Header, 0, len(headers)+2)
	for _, h := range headers {
		if h.Key != report.HeaderTraceparent && h.Key != report.HeaderTracestate {
			out = append(out, h)
			continue
		}
		if v, ok := carrier[h.Key]; ok {
			out = append(out, kafka.Header{Key: h.Key, Value: []byte(v)})
			delete(carrier, h.Key)
		}
	}
	for _, k := range []string{report.HeaderTraceparent, report.HeaderTracestate} {
		if v, ok := carrier[k]; ok && v != "" {
			out = append(out, kafka.Header{Key: k, Value: []byte(v)})
		}
	}
	return out
}

// goZero is the instrumentation name of go-zero's own spans (core/trace.TraceName).
const goZero = "go-zero"

// OwnSpansOnly makes the spans go-zero starts from the global provider silent once go-zero's agent has
// installed an SDK provider; it does nothing otherwise. That is go-zero's REST trace middleware, which names a
// span after the raw URL path of a request no route matched and records the path (a status lookup's request
// id), the client's address and its user agent. A silenced span keeps the caller's context, so the suite's
// spans around it stay parent and child. go-zero's store hooks (Redis, sqlx) take their tracer from the
// parent span instead and still record, under the suite's spans, with command names only.
func OwnSpansOnly() {
	if p, ok := otel.GetTracerProvider().(*sdktrace.TracerProvider); ok {
		otel.SetTracerProvider(ownOnly{sdk: p})
	}
}

type ownOnly struct {
	embedded.TracerProvider
	sdk *sdktrace.TracerProvider
}

func (o ownOnly) Tracer(name string, opts ...oteltrace.TracerOption) oteltrace.Tracer {
	if name == goZero {
		return silentTracer{}
	}
	return o.sdk.Tracer(name, opts...)
}

type silentTracer struct{ embedded.Tracer }

// Start returns ctx as it is and a span that records nothing.
func (silentTracer) Start(ctx context.Context, _ string, _ ...oteltrace.SpanStartOption) (context.Context, oteltrace.Span) {
	return ctx, silentSpan{sc: oteltrace.SpanContextFromContext(ctx)}
}

type silentSpan struct {
	noop.Span
	sc oteltrace.SpanContext
}

func (s silentSpan) SpanContext() oteltrace.SpanContext { return s.sc }
