package handler

import (
	"net/http"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/dlq-worker/internal/logic"
	"github.com/epro-intake/dlq-worker/internal/svc"
	"github.com/epro-intake/dlq-worker/internal/types"
)

// RedriveReconciliationHandler answers a started re-drive with 202.
func RedriveReconciliationHandler(svcCtx *svc.ServiceContext) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req types.IDReq
		if err := parse(r, &req); err != nil {
			errcode.Write(r.Context(), w, err)
			return
		}
		resp, err := logic.NewRedriveReconciliationLogic(r.Context(), svcCtx).RedriveReconciliation(&req)
		writeJSON(w, r, http.StatusAccepted, resp, err)
	}
}
