package middleware

import (
	"context"
	"net/http"
	"time"

	"github.com/zeromicro/go-zero/core/logx"

	"github.com/epro-intake/dlq-worker/internal/auth"
)

type actorSlot struct{ p auth.Principal }

type actorKey struct{}

// noteActor lets the access log name the caller once the auth middleware, which runs later, knows it.
func noteActor(ctx context.Context, p auth.Principal) {
	if s, ok := ctx.Value(actorKey{}).(*actorSlot); ok {
		s.p = p
	}
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (an export cut short closes it).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush keeps streaming responses working through the wrapper.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// AccessLog logs method, path, status, duration and the caller of every request. It replaces go-zero's log
// middleware, which dumps request bodies on errors; bodies and query strings (filters name patients) are
// never logged.
func AccessLog(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		slot := &actorSlot{}
		sw := &statusWriter{ResponseWriter: w}
		next(sw, r.WithContext(context.WithValue(r.Context(), actorKey{}, slot)))
		logx.WithContext(r.Context()).Infow("http",
			logx.Field("method", r.Method), logx.Field("path", r.URL.Path), logx.Field("status", sw.status),
			logx.Field("durationMs", time.Since(start).Milliseconds()),
			logx.Field("actor", slot.p.Actor), logx.Field("role", slot.p.Role))
	}
}
