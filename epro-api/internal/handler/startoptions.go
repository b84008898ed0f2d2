package handler

import (
	"net/http"

	"github.com/zeromicro/go-zero/rest"

	"github.com/epro-intake/epro-api/internal/middleware"
	"github.com/epro-intake/epro-api/internal/svc"
)

// StartOptions are the options main starts go-zero's server with, and the tests apply to theirs: the
// http.Server limits (ServerLimits), the CORS policy (CORS) and, around both, the server span
// (middleware.Trace) and the request metrics.
func StartOptions(svcCtx *svc.ServiceContext) []rest.StartOption {
	return []rest.StartOption{ServerLimits(svcCtx.Config), CORS(svcCtx.Config), Trace, Metrics(svcCtx)}
}

// Trace starts a server span for every request (internal/middleware.Trace), around the whole handler.
func Trace(s *http.Server) {
	s.Handler = middleware.Trace(s.Handler)
}

// Metrics counts every request the server answers (internal/metrics.Wrap), around the whole handler so that
// go-zero's own answers (404, 405, its timeout) are counted with the status the client got.
func Metrics(svcCtx *svc.ServiceContext) rest.StartOption {
	return func(s *http.Server) {
		s.Handler = svcCtx.Metrics.Wrap(s.Handler)
	}
}
