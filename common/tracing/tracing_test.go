package tracing

import (
	"context"
	"testing"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/epro-intake/common/report"
)

func TestInjectExtractRoundTrip(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("test").Start(context.Background(), "s")
	defer span.End()

	in := []kafka.Header{
		{Key: report.HeaderRequestID, Value: []byte("r1")},
		{Key: report.HeaderTraceparent, Value: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")},
		{Key: "x-other", Value: []byte("v")},
	}
	out := Inject(ctx, in)
	var keys []string
	for _, h := range out {
		keys = append(keys, h.Key)
	}
	if want := []string{report.HeaderRequestID, report.HeaderTraceparent, "x-other"}; len(keys) != len(want) ||
		keys[0] != want[0] || keys[1] != want[1] || keys[2] != want[2] {
		t.Fatalf("headers %v, want %v", keys, want)
	}
	if string(out[1].Value) == string(in[1].Value) {
		t.Error("traceparent not replaced")
	}
	if string(in[1].Value) != "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" {
		t.Fatal("Inject changed its input")
	}
	got := oteltrace.SpanContextFromContext(Extract(context.Background(), out))
	if !got.IsRemote() || got.TraceID() != span.SpanContext().TraceID() || got.SpanID() != span.SpanContext().SpanID() {
		t.Fatalf("extracted %v, want the span %v", got, span.SpanContext())
	}
}

func TestInjectWithoutSpanDropsStaleContext(t *testing.T) {
	out := Inject(context.Background(), []kafka.Header{
		{Key: report.HeaderTraceparent, Value: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")},
		{Key: report.HeaderTracestate, Value: []byte("a=b")},
	})
	if len(out) != 0 {
		t.Fatalf("headers %v, want none", out)
	}
}

func TestExtractIgnoresInvalid(t *testing.T) {
	ctx := Extract(context.Background(), []kafka.Header{{Key: report.HeaderTraceparent, Value: []byte("garbage")}})
	if oteltrace.SpanContextFromContext(ctx).IsValid() {
		t.Fatal("an invalid traceparent gave a span context")
	}
}

func TestOwnSpansOnlySilencesGoZero(t *testing.T) {
	prev := otel.GetTracerProvider()
	t.Cleanup(func() { otel.SetTracerProvider(prev) })
	rec := tracetest.NewSpanRecorder()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)))
	OwnSpansOnly()

	ctx, own := Tracer().Start(context.Background(), "own")
	gzCtx, gz := otel.Tracer("go-zero").Start(ctx, "/raw/path/with/an/id")
	if !gz.SpanContext().Equal(own.SpanContext()) || oteltrace.SpanFromContext(gzCtx) != own {
		t.Error("go-zero's span did not keep the caller's context")
	}
	_, child := Tracer().Start(gzCtx, "child")
	gz.End()
	child.End()
	own.End()

	var names []string
	for _, s := range rec.Ended() {
		names = append(names, s.Name())
		if s.Name() == "child" && s.Parent().SpanID() != own.SpanContext().SpanID() {
			t.Error("child's parent is not the own span")
		}
	}
	if len(names) != 2 || names[0] != "child" || names[1] != "own" {
		t.Errorf("recorded %v, want [child own]", names)
	}
}
