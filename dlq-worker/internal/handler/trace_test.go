package handler_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/tracing"
	"github.com/epro-intake/dlq-worker/internal/auth"
)

// A replay continues the trace its dead letter carries: the replayed record's traceparent names the replay's
// producer span, a child of the dead letter's span, so epro-mq's process span of the replay (a child of the
// record's traceparent, see epro-mq's TestTraceFromRecordToStoredRow) is in the report's trace. The archive
// keeps the dead letter's traceparent, and no span carries the request id or the patient.
func TestReplayContinuesTheDeadLettersTrace(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	tracing.OwnSpansOnly()
	t.Cleanup(func() {
		otel.SetTracerProvider(prev)
		_ = tp.Shutdown(context.Background())
	})

	// The harness's dead letters carry this traceparent, as epro-mq writes it.
	const traceID, deadLetterSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	w := newWorker(t, workerOptions{})
	dl := w.seed(1, "T-TRACE", report.ErrorClassPermanent)[0]
	var archived string
	if err := w.db.QueryRow("SELECT headers FROM dead_letters WHERE id = ?", dl.id).Scan(&archived); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(archived, traceID) {
		t.Fatalf("the archive lost the traceparent: %s", archived)
	}

	r := w.do(http.MethodPost, idPath(dl.id, "/replay"), w.token("otto", auth.RoleOperator), nil)
	if r.status != http.StatusOK {
		t.Fatalf("replay = %d %s", r.status, r.body)
	}
	m := w.sourceRecords(1, 20*time.Second)[0]
	tpHeader, _ := header(m, report.HeaderTraceparent)

	var send sdktrace.ReadOnlySpan
	for _, s := range exp.GetSpans().Snapshots() {
		if s.Name() == "send "+w.source {
			send = s
		}
	}
	if send == nil {
		t.Fatalf("no replay span among %d", len(exp.GetSpans()))
	}
	if send.SpanKind() != oteltrace.SpanKindProducer || send.SpanContext().TraceID().String() != traceID ||
		send.Parent().SpanID().String() != deadLetterSpan {
		t.Errorf("replay span %v in trace %s under %s, want a producer span in %s under %s",
			send.SpanKind(), send.SpanContext().TraceID(), send.Parent().SpanID(), traceID, deadLetterSpan)
	}
	if want := "00-" + traceID + "-" + send.SpanContext().SpanID().String() + "-01"; tpHeader != want {
		t.Errorf("replayed record's traceparent %q, want the replay span's %q", tpHeader, want)
	}
	for _, s := range exp.GetSpans().Snapshots() {
		texts := []string{s.Name()}
		for _, kv := range s.Attributes() {
			texts = append(texts, kv.Value.String())
		}
		for _, text := range texts {
			for _, f := range []string{dl.requestID, dl.patient} {
				if strings.Contains(text, f) {
					t.Errorf("span %q carries %q", s.Name(), f)
				}
			}
		}
	}
}
