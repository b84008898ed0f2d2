package handler

import (
	"net/http"

	"github.com/epro-intake/dlq-worker/internal/logic"
	"github.com/epro-intake/dlq-worker/internal/svc"
)

func DiscardReasonsHandler(svcCtx *svc.ServiceContext) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		resp, err := logic.NewDiscardReasonsLogic(r.Context(), svcCtx).DiscardReasons()
		writeJSON(w, r, http.StatusOK, resp, err)
	}
}
