package handler

import (
	"net/http"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/dlq-worker/internal/logic"
	"github.com/epro-intake/dlq-worker/internal/svc"
	"github.com/epro-intake/dlq-worker/internal/types"
)

// StartReconciliationHandler answers a started run with 202.
func StartReconciliationHandler(svcCtx *svc.ServiceContext) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req types.ReconcileReq
		if err := parse(r, &req); err != nil {
			errcode.Write(r.Context(), w, err)
			return
		}
		resp, err := logic.NewStartReconciliationLogic(r.Context(), svcCtx).StartReconciliation(&req)
		writeJSON(w, r, http.StatusAccepted, resp, err)
	}
}
