package handler

import (
	"net/http"

	"github.com/epro-intake/dlq-worker/internal/logic"
	"github.com/epro-intake/dlq-worker/internal/svc"
)

func StatsHandler(svcCtx *svc.ServiceContext) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		resp, err := logic.NewStatsLogic(r.Context(), svcCtx).Stats()
		writeJSON(w, r, http.StatusOK, resp, err)
	}
}
