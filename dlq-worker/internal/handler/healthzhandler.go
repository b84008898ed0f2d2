package handler

import (
	"net/http"

	"github.com/epro-intake/dlq-worker/internal/svc"
	"github.com/epro-intake/dlq-worker/internal/types"
)

// HealthzHandler answers liveness: the process serves HTTP.
func HealthzHandler(_ *svc.ServiceContext) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, r, http.StatusOK, types.HealthResp{Status: "ok"}, nil)
	}
}
