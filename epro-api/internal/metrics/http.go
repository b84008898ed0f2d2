package metrics

import (
	"net/http"
	"strings"
)

// Wrap counts every request next answers, by route and status code, and the requests in flight. It wraps the
// whole server handler rather than go-zero's routes, so that the answers go-zero writes itself (404, 405,
// its timeout's 503) are counted with the status the client got.
func (m *Metrics) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.inFlight.Inc()
		rec := NewStatusRecorder(w)
		defer func() {
			m.inFlight.Dec()
			m.Request(RouteOf(r.URL.Path), rec.Status)
		}()
		next.ServeHTTP(rec, r)
	})
}

// RouteOf returns the index in Routes of the route template path belongs to: a path segment a client chose
// (the request id) never becomes a label value.
func RouteOf(path string) int {
	switch path {
	case "/v1/reports":
		return 0
	case "/v1/reports/batch":
		return 1
	case "/healthz":
		return 3
	case "/readyz":
		return 4
	case "/metrics":
		return 5
	}
	if id, ok := strings.CutPrefix(path, "/v1/reports/"); ok && id != "" && !strings.Contains(id, "/") {
		return 2
	}
	return len(Routes) - 1
}

// StatusRecorder wraps a ResponseWriter and records the status and body bytes written through it; the metrics
// handler, the access log and the trace middleware each read one.
type StatusRecorder struct {
	http.ResponseWriter
	Status      int
	Bytes       int
	wroteHeader bool
}

// NewStatusRecorder returns a recorder for w; the status is 200 until a handler writes another.
func NewStatusRecorder(w http.ResponseWriter) *StatusRecorder {
	return &StatusRecorder{ResponseWriter: w, Status: http.StatusOK}
}

func (s *StatusRecorder) WriteHeader(code int) {
	if !s.wroteHeader {
		s.Status = code
		s.wroteHeader = true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *StatusRecorder) Write(b []byte) (int, error) {
	s.wroteHeader = true
	n, err := s.ResponseWriter.Write(b)
	s.Bytes += n
	return n, err
}

// Flush passes a flush on, for the writers that support it.
func (s *StatusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (s *StatusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
