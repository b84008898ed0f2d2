package handler

import (
	"net/http"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/dlq-worker/internal/logic"
	"github.com/epro-intake/dlq-worker/internal/svc"
	"github.com/epro-intake/dlq-worker/internal/types"
)

func GetReconciliationHandler(svcCtx *svc.ServiceContext) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req types.IDReq
		if err := parse(r, &req); err != nil {
			errcode.Write(r.Context(), w, err)
			return
		}
		resp, err := logic.NewGetReconciliationLogic(r.Context(), svcCtx).GetReconciliation(&req)
		writeJSON(w, r, http.StatusOK, resp, err)
	}
}
