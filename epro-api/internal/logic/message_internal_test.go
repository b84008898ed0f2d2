package logic

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/epro-intake/common/report"
)

func TestReportMessage(t *testing.T) {
	env := report.Envelope{
		SchemaVersion: report.SchemaVersion, RequestID: "1b4e28ba-2fa1-41d2-883f-0016d3cca427", PatientID: "PAT-1",
		TrialID: "T", QuestionnaireID: "Q", QuestionnaireVersion: "1", SubmittedAt: "2026-03-01T20:05:00+01:00",
		Answers: json.RawMessage(`{"a":1}`), ReceivedAt: time.Date(2026, 3, 1, 19, 5, 1, 5, time.UTC),
	}
	traced := func() context.Context {
		sc := trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: trace.FlagsSampled,
		})
		ts, _ := trace.ParseTraceState("vendor=abc")
		return trace.ContextWithSpanContext(context.Background(), sc.WithTraceState(ts))
	}
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		headers map[string]string
	}{
		{"untraced", context.Background(), map[string]string{
			"x-request-id": env.RequestID, "x-schema-version": "1",
		}},
		{"traced", traced(), map[string]string{
			"x-request-id": env.RequestID, "x-schema-version": "1",
			"traceparent": "00-01020300000000000000000000000000-0405060000000000-01", "tracestate": "vendor=abc",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := reportMessage(tc.ctx, "topic-x", env)
			if err != nil {
				t.Fatal(err)
			}
			if m.Topic != "topic-x" || string(m.Key) != "PAT-1" {
				t.Errorf("topic %q key %q", m.Topic, m.Key)
			}
			got := map[string]string{}
			for _, h := range m.Headers {
				if _, dup := got[h.Key]; dup {
					t.Errorf("header %s twice", h.Key)
				}
				got[h.Key] = string(h.Value)
			}
			if len(got) != len(tc.headers) {
				t.Errorf("headers %v, want %v", got, tc.headers)
			}
			for k, v := range tc.headers {
				if got[k] != v {
					t.Errorf("header %s = %q, want %q", k, got[k], v)
				}
			}
			back, err := report.ParseEnvelope(m.Value)
			if err != nil {
				t.Fatal(err)
			}
			if !back.ReceivedAt.Equal(env.ReceivedAt) || formatTime(env.ReceivedAt) != "2026-03-01T19:05:01.000000005Z" {
				t.Errorf("receivedAt %s / %s", back.ReceivedAt, formatTime(env.ReceivedAt))
			}
		})
	}
}
