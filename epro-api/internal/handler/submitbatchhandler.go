package handler

import (
	"net/http"

	"github.com/zeromicro/go-zero/rest/httpx"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/epro-api/internal/logic"
	"github.com/epro-intake/epro-api/internal/svc"
)

func SubmitBatchHandler(svcCtx *svc.ServiceContext) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := readJSONBody(w, r, svcCtx.Config.Limits.BatchBodyBytes)
		if err != nil {
			writeError(svcCtx, w, r, err)
			return
		}
		items, err := report.ParseBatch(body, svcCtx.Config.Limits.BatchItems)
		if err != nil {
			writeError(svcCtx, w, r, err)
			return
		}
		resp, err := logic.NewSubmitBatchLogic(r.Context(), svcCtx).SubmitBatch(items)
		if err != nil {
			writeError(svcCtx, w, r, err)
			return
		}
		httpx.WriteJsonCtx(r.Context(), w, http.StatusOK, resp)
	}
}
