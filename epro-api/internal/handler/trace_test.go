package handler_test

import (
	"bytes"
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
)

// recordSpans installs a recording provider as the global one, as go-zero's agent does when
// Telemetry.Endpoint is set, for the rest of the test.
func recordSpans(t *testing.T) *tracetest.InMemoryExporter {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	tracing.OwnSpansOnly()
	t.Cleanup(func() {
		otel.SetTracerProvider(prev)
		_ = tp.Shutdown(t.Context())
	})
	return exp
}

// The record of an accepted report carries the trace of the request that sent it: its traceparent names the
// producer span, a child of the server span, a child of the device's traceparent. No span names or records
// the request id, the patient id or an answer.
func TestTraceFromRequestToRecord(t *testing.T) {
	exp := recordSpans(t)
	a := newAPI(t, apiOptions{})
	rep := validReport("PAT-TRACE-1")
	const traceID, deviceSpan = "5bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req, _ := http.NewRequest(http.MethodPost, a.url+"/v1/reports", bytes.NewReader(mustJSON(t, rep)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", "00-"+traceID+"-"+deviceSpan+"-01")
	if resp := a.do(a.authorize(req, "PAT-TRACE-1")); resp.status != http.StatusAccepted {
		t.Fatalf("status %d, body %s", resp.status, resp.body)
	}
	m := a.readMessages(0, 1, 5*time.Second)[0]
	tp, _ := header(m, report.HeaderTraceparent)

	// The server span ends after the answer is written; wait for it.
	var server, send sdktrace.ReadOnlySpan
	waitFor(t, 5*time.Second, "server and producer spans", func() bool {
		server, send = nil, nil
		for _, s := range exp.GetSpans().Snapshots() {
			switch s.Name() {
			case "POST /v1/reports":
				server = s
			case "send " + a.topic:
				send = s
			}
		}
		return server != nil && send != nil
	})
	if server.SpanKind() != oteltrace.SpanKindServer || server.SpanContext().TraceID().String() != traceID ||
		server.Parent().SpanID().String() != deviceSpan {
		t.Errorf("server span %v in trace %s, parent %s; want a server span in %s under %s",
			server.SpanKind(), server.SpanContext().TraceID(), server.Parent().SpanID(), traceID, deviceSpan)
	}
	if send.SpanKind() != oteltrace.SpanKindProducer || send.Parent().SpanID() != server.SpanContext().SpanID() {
		t.Errorf("producer span %v under %s, want under the server span %s", send.SpanKind(), send.Parent().SpanID(), server.SpanContext().SpanID())
	}
	if want := "00-" + traceID + "-" + send.SpanContext().SpanID().String() + "-01"; tp != want {
		t.Errorf("record traceparent %q, want the producer span's %q", tp, want)
	}

	// A status lookup is named by its route template, not by the id in its path.
	if resp := a.getAs("PAT-TRACE-1", "/v1/reports/"+rep["requestId"].(string)); resp.status != http.StatusOK {
		t.Fatalf("status lookup %d: %s", resp.status, resp.body)
	}
	waitFor(t, 5*time.Second, "status lookup span", func() bool {
		for _, s := range exp.GetSpans().Snapshots() {
			if s.Name() == "GET /v1/reports/:requestId" {
				return true
			}
		}
		return false
	})
	forbidden := []string{rep["requestId"].(string), "PAT-TRACE-1", privateNote}
	for _, s := range exp.GetSpans().Snapshots() {
		texts := []string{s.Name()}
		for _, kv := range s.Attributes() {
			texts = append(texts, kv.Value.String())
		}
		for _, e := range s.Events() {
			texts = append(texts, e.Name)
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
