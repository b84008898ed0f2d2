package handler

import (
	"net/http"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/dlq-worker/internal/logic"
	"github.com/epro-intake/dlq-worker/internal/svc"
	"github.com/epro-intake/dlq-worker/internal/types"
)

// BulkReplayHandler answers a dry run with 200 and a started job with 202.
func BulkReplayHandler(svcCtx *svc.ServiceContext) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req types.BulkReplayReq
		if err := parse(r, &req); err != nil {
			errcode.Write(r.Context(), w, err)
			return
		}
		resp, err := logic.NewBulkReplayLogic(r.Context(), svcCtx).BulkReplay(&req)
		status := http.StatusOK
		if err == nil && resp.Job != nil {
			status = http.StatusAccepted
		}
		writeJSON(w, r, status, resp, err)
	}
}
