package metrics_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/epro-api/internal/metrics"
)

// BenchmarkRequestMetrics is what the metrics add to one accepted report: the wrapper around the server's
// handler (in-flight gauge, status capture, route and code counter) and the logic's calls (produce latency,
// outcome, upload delay), against the same handler without them. The handler writes a 202 and nothing else, so
// the difference is the whole cost; a real request (validation, Redis, MySQL, an acks=all Send) takes
// hundreds of microseconds to milliseconds.
//
//	cd epro-api && go test -run '^$' -bench RequestMetrics -benchmem ./internal/metrics
func BenchmarkRequestMetrics(b *testing.B) {
	m := metrics.New()
	submitted := time.Now().Add(-time.Hour)
	plain := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusAccepted) })
	counted := m.Wrap(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		m.Produced(time.Millisecond, nil)
		m.Report(metrics.OutcomeAccepted)
		m.UploadDelay(submitted, time.Now())
		w.WriteHeader(http.StatusAccepted)
	}))
	for _, bc := range []struct {
		name string
		h    http.Handler
	}{{"without", plain}, {"with", counted}} {
		b.Run(bc.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodPost, "/v1/reports", nil)
			w := discard{}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					bc.h.ServeHTTP(w, req)
				}
			})
		})
	}
}

// BenchmarkRejected is one refused request's or batch item's count.
func BenchmarkRejected(b *testing.B) {
	m := metrics.New()
	b.ReportAllocs()
	for range b.N {
		m.Rejected(errcode.ValidationFailed)
	}
}

type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(p []byte) (int, error) { return len(p), nil }
func (discard) WriteHeader(int)             {}
