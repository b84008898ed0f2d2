// Package middleware holds epro-api's HTTP middleware.
package middleware

import (
	"github.com/epro-intake/epro-api/internal/metrics"

	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/zeromicro/go-zero/core/logx"

	"github.com/epro-intake/common/report"
)

// routeWords are the path segments of epro-api's routes. Any other segment is client input (a request id,
// valid or not, or a mistyped path) and is logged as ":id" when it is a canonical request id and ":other"
// otherwise, so no client-chosen text reaches the log through the path.
var routeWords = map[string]bool{"v1": true, "reports": true, "batch": true, "healthz": true, "readyz": true}

// maxPathSegments bounds the logged path's length; the rest is summarised.
const maxPathSegments = 8

type entry struct {
	mu         sync.Mutex
	requestIDs []string
}

type entryKey struct{}

// NoteRequestID adds a validated, canonical request id to the request's access log line. Only such ids may
// be noted: anything else the client sent could be free text.
func NoteRequestID(ctx context.Context, id string) {
	if e, ok := ctx.Value(entryKey{}).(*entry); ok {
		e.mu.Lock()
		e.requestIDs = append(e.requestIDs, id)
		e.mu.Unlock()
	}
}

// AccessLog writes one line per request: method, path, status, body size, duration and the request ids the
// handler noted. It replaces go-zero's log middleware, which dumps the body of failed requests. It never
// reads the body, so nothing a patient wrote can reach the log from here.
func AccessLog(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		e := &entry{}
		rec := metrics.NewStatusRecorder(w)
		// Counted rather than taken from Content-Length, which chunked bodies do not have.
		body := &countingBody{ReadCloser: r.Body}
		r.Body = body
		next(rec, r.WithContext(context.WithValue(r.Context(), entryKey{}, e)))

		path := logPath(r.URL.Path)
		e.mu.Lock()
		fields := []logx.LogField{
			logx.Field("method", r.Method),
			logx.Field("path", path),
			logx.Field("status", rec.Status),
			logx.Field("reqBytes", body.n),
			logx.Field("respBytes", rec.Bytes),
		}
		if len(e.requestIDs) > 0 {
			fields = append(fields, logx.Field("requestIds", e.requestIDs))
		}
		e.mu.Unlock()
		logger := logx.WithContext(r.Context()).WithDuration(time.Since(start))
		if rec.Status >= http.StatusInternalServerError {
			logger.Errorw("http", fields...)
		} else {
			logger.Infow("http", fields...)
		}
	}
}

type countingBody struct {
	io.ReadCloser
	n int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n += int64(n)
	return n, err
}

// logPath is path with every segment that is not a route word replaced (see routeWords).
func logPath(path string) string {
	segs := strings.Split(path, "/")
	more := len(segs) > maxPathSegments
	if more {
		segs = segs[:maxPathSegments]
	}
	for i, s := range segs {
		switch {
		case s == "" || routeWords[s]:
		case isCanonicalID(s):
			segs[i] = ":id"
		default:
			segs[i] = ":other"
		}
	}
	out := strings.Join(segs, "/")
	if more {
		out += "/..."
	}
	return out
}

// isCanonicalID reports whether s is a lowercase UUID, the only form of a request id epro-api hands back.
func isCanonicalID(s string) bool {
	id, ok := report.CanonicalRequestID(s)
	return ok && id == s
}
