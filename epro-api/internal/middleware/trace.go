package middleware

import (
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/tracing"
	"github.com/epro-intake/epro-api/internal/metrics"
)

// Trace starts a server span for every request next answers, a child of the caller's W3C traceparent when it
// sends one. The span is named by method and route template ("GET /v1/reports/:requestId"), never by the
// path a client wrote, and records only the method, the route and the status code: no request id, no patient
// id, no client address, no header. It wraps the whole server handler, like the request metrics, so that
// go-zero's own answers are traced with the status the client got.
func Trace(next http.Handler) http.Handler {
	// Only Trace Context: a client's baggage has no business in the suite.
	propagator := propagation.TraceContext{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route := metrics.Routes[metrics.RouteOf(r.URL.Path)]
		ctx := propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := tracing.Tracer().Start(ctx, r.Method+" "+route, oteltrace.WithSpanKind(oteltrace.SpanKindServer),
			oteltrace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("http.route", route)))
		rec := metrics.NewStatusRecorder(w)
		defer func() {
			span.SetAttributes(attribute.Int("http.response.status_code", rec.Status))
			if rec.Status >= http.StatusInternalServerError {
				span.SetStatus(codes.Error, http.StatusText(rec.Status))
			}
			span.End()
		}()
		r = r.WithContext(ctx)
		if r.Header.Get(report.HeaderTraceparent) != "" || r.Header.Get(report.HeaderTracestate) != "" {
			// go-zero's trace middleware extracts them again, which would put the caller's span in place of
			// this one under every span the handler starts.
			r.Header = r.Header.Clone()
			r.Header.Del(report.HeaderTraceparent)
			r.Header.Del(report.HeaderTracestate)
		}
		next.ServeHTTP(rec, r)
	})
}
