package ingest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/epro-intake/common/deadletter"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/tracing"
	"github.com/epro-intake/epro-mq/internal/ingest"
	"github.com/epro-intake/epro-mq/internal/store"
)

// recordSpans installs a recording provider as the global one, as go-zero's agent does when
// Telemetry.Endpoint is set, for the rest of the test.
func recordSpans(t *testing.T) *tracetest.InMemoryExporter {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	t.Cleanup(func() {
		otel.SetTracerProvider(prev)
		_ = tp.Shutdown(context.Background())
	})
	return exp
}

// traced returns m with the traceparent of a producer span in trace traceID.
func traced(m kafka.Message, traceID, spanID string) kafka.Message {
	m.Headers = append(m.Headers, kafka.Header{Key: report.HeaderTraceparent, Value: []byte("00-" + traceID + "-" + spanID + "-01")})
	return m
}

func spansOf(exp *tracetest.InMemoryExporter, traceID string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range exp.GetSpans().Snapshots() {
		if s.SpanContext().TraceID().String() == traceID {
			out = append(out, s)
		}
	}
	return out
}

func attr(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value.String()
		}
	}
	return ""
}

// noIDs fails when a span names or records a request id, a patient or an answer.
func noIDs(t *testing.T, exp *tracetest.InMemoryExporter, forbidden ...string) {
	t.Helper()
	for _, s := range exp.GetSpans().Snapshots() {
		texts := []string{s.Name()}
		for _, kv := range s.Attributes() {
			texts = append(texts, kv.Value.String())
		}
		for _, text := range texts {
			for _, f := range forbidden {
				if strings.Contains(text, f) {
					t.Errorf("span %q carries %q", s.Name(), f)
				}
			}
		}
	}
}

// A record's process span continues the trace its traceparent names and says it was stored; the insert
// that wrote rows of two traces links to both process spans.
func TestTraceFromRecordToStoredRow(t *testing.T) {
	exp := recordSpans(t)
	db := openDB(t)
	in := newIngester(t, ingest.Conf{Group: "g", DLQTopic: report.DLQTopic}, store.NewReports(db), &fakeDLQ{}, nil)
	const traceA, spanA = "6bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	const traceB, spanB = "7bf92f3577b34da6a3ce929d0e0e4736", "10f067aa0ba902b7"
	idA, idB := newID(), newID()
	a := traced(record(t, 1, idA, "p-trace-a", "1"), traceA, spanA)
	b := traced(record(t, 2, idB, "p-trace-b", "1"), traceB, spanB)
	if err := in.HandleBatch(context.Background(), []kafka.Message{a, b}); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, "WHERE request_id IN (?, ?)", idA, idB); n != 2 {
		t.Fatalf("%d rows stored, want 2", n)
	}

	process := map[string]sdktrace.ReadOnlySpan{}
	for traceID, parent := range map[string]string{traceA: spanA, traceB: spanB} {
		spans := spansOf(exp, traceID)
		if len(spans) != 1 {
			t.Fatalf("trace %s has %d spans, want the process span", traceID, len(spans))
		}
		s := spans[0]
		if s.Name() != "process "+report.Topic || s.SpanKind() != oteltrace.SpanKindConsumer || s.Parent().SpanID().String() != parent ||
			attr(s, "epro.outcome") != "stored" {
			t.Errorf("span %q kind %v parent %s outcome %q; want the stored record's process span under %s",
				s.Name(), s.SpanKind(), s.Parent().SpanID(), attr(s, "epro.outcome"), parent)
		}
		process[traceID] = s
	}
	var insert sdktrace.ReadOnlySpan
	for _, s := range exp.GetSpans().Snapshots() {
		if s.Name() == "INSERT reports" {
			insert = s
		}
	}
	if insert == nil {
		t.Fatal("no insert span")
	}
	linked := map[oteltrace.SpanID]bool{}
	for _, l := range insert.Links() {
		linked[l.SpanContext.SpanID()] = true
	}
	if len(linked) != 2 || !linked[process[traceA].SpanContext().SpanID()] || !linked[process[traceB].SpanContext().SpanID()] {
		t.Errorf("insert links %v, want both process spans", insert.Links())
	}
	if attr(insert, "db.operation.batch.size") != "2" {
		t.Errorf("insert batch size %q", attr(insert, "db.operation.batch.size"))
	}
	noIDs(t, exp, idA, idB, "p-trace-a", "p-trace-b", "slept badly")
}

// A dead letter continues its record's trace: its traceparent names the send span, a child of the record's
// process span, and the rest of its headers are the record's followed by the dead-letter set.
func TestDeadLetterCarriesTheRecordsTrace(t *testing.T) {
	exp := recordSpans(t)
	db := openDB(t)
	dlq := &fakeDLQ{}
	in := newIngester(t, ingest.Conf{Group: "g", DLQTopic: report.DLQTopic}, store.NewReports(db), dlq, nil)
	const traceID, parent = "8bf92f3577b34da6a3ce929d0e0e4736", "20f067aa0ba902b7"
	poison := traced(kafka.Message{Topic: report.Topic, Partition: 3, Offset: 9, Key: []byte("p-1"), Value: []byte("not json"), Time: time.Now(),
		Headers: []kafka.Header{{Key: "origin", Value: []byte("x")}}}, traceID, parent)
	if err := in.HandleBatch(context.Background(), []kafka.Message{poison}); err != nil {
		t.Fatal(err)
	}
	sent := dlq.sent()
	if len(sent) != 1 {
		t.Fatalf("%d dead letters, want 1", len(sent))
	}
	dl := sent[0]

	var process, send sdktrace.ReadOnlySpan
	for _, s := range spansOf(exp, traceID) {
		switch s.Name() {
		case "process " + report.Topic:
			process = s
		case "send " + report.DLQTopic:
			send = s
		}
	}
	if process == nil || send == nil {
		t.Fatalf("trace %s lacks the process or the send span: %v", traceID, spansOf(exp, traceID))
	}
	if process.Parent().SpanID().String() != parent || attr(process, "epro.outcome") != "dead-lettered" ||
		attr(process, "epro.dead_letter.class") != report.ErrorClassPoison {
		t.Errorf("process span under %s, outcome %q class %q", process.Parent().SpanID(), attr(process, "epro.outcome"), attr(process, "epro.dead_letter.class"))
	}
	if send.SpanKind() != oteltrace.SpanKindProducer || send.Parent().SpanID() != process.SpanContext().SpanID() {
		t.Errorf("send span %v under %s, want a producer span under the process span", send.SpanKind(), send.Parent().SpanID())
	}
	if want := "00-" + traceID + "-" + send.SpanContext().SpanID().String() + "-01"; header(dl, report.HeaderTraceparent) != want {
		t.Errorf("dead letter traceparent %q, want %q", header(dl, report.HeaderTraceparent), want)
	}
	// The record's headers (its trace context replaced) come first, then the dead-letter set, which
	// dlq-worker's replay strips.
	var keys []string
	for _, h := range deadletter.Strip(dl.Headers) {
		keys = append(keys, h.Key)
	}
	if strings.Join(keys, ",") != "origin,"+report.HeaderTraceparent {
		t.Errorf("headers after the set is stripped: %v", keys)
	}
	if _, err := deadletter.Parse(dl.Headers); err != nil {
		t.Errorf("dead-letter set does not parse: %v", err)
	}
	if sc := oteltrace.SpanContextFromContext(tracing.Extract(context.Background(), dl.Headers)); !sc.IsSampled() {
		t.Error("dead letter's trace context is not sampled")
	}
}
