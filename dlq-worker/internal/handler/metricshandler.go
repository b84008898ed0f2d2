package handler

import (
	"net/http"

	"github.com/epro-intake/dlq-worker/internal/svc"
)

// MetricsHandler serves Prometheus metrics. It needs no token, like any scrape endpoint; it exposes counts
// only, never ids or content.
func MetricsHandler(svcCtx *svc.ServiceContext) http.HandlerFunc {
	h := svcCtx.Metrics.Handler()
	return h.ServeHTTP
}
