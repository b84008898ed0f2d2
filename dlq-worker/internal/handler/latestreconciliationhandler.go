package handler

import (
	"net/http"

	"github.com/epro-intake/dlq-worker/internal/logic"
	"github.com/epro-intake/dlq-worker/internal/svc"
)

func LatestReconciliationHandler(svcCtx *svc.ServiceContext) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		resp, err := logic.NewLatestReconciliationLogic(r.Context(), svcCtx).LatestReconciliation()
		writeJSON(w, r, http.StatusOK, resp, err)
	}
}
