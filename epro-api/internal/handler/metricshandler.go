package handler

import (
	"net/http"

	"github.com/epro-intake/epro-api/internal/svc"
)

// MetricsHandler serves Prometheus metrics (internal/metrics). It needs no token, like any scrape endpoint; it
// exposes counts only, never ids or content.
func MetricsHandler(svcCtx *svc.ServiceContext) http.HandlerFunc {
	return svcCtx.Metrics.Handler().ServeHTTP
}
