package handler

import (
	"net/http"

	"github.com/epro-intake/dlq-worker/internal/logic"
	"github.com/epro-intake/dlq-worker/internal/svc"
)

// ReadyzHandler answers readiness: MySQL answers (see logic.ReadyzLogic).
func ReadyzHandler(svcCtx *svc.ServiceContext) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		resp, err := logic.NewReadyzLogic(r.Context(), svcCtx).Readyz()
		writeJSON(w, r, http.StatusOK, resp, err)
	}
}
