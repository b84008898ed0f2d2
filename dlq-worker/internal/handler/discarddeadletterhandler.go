package handler

import (
	"net/http"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/dlq-worker/internal/logic"
	"github.com/epro-intake/dlq-worker/internal/svc"
	"github.com/epro-intake/dlq-worker/internal/types"
)

func DiscardDeadLetterHandler(svcCtx *svc.ServiceContext) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req types.DiscardReq
		if err := parse(r, &req); err != nil {
			errcode.Write(r.Context(), w, err)
			return
		}
		resp, err := logic.NewDiscardDeadLetterLogic(r.Context(), svcCtx).DiscardDeadLetter(&req)
		writeJSON(w, r, http.StatusOK, resp, err)
	}
}
