package handler

import (
	"net/http"

	"github.com/zeromicro/go-zero/rest/httpx"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/epro-api/internal/logic"
	"github.com/epro-intake/epro-api/internal/svc"
)

func SubmitReportHandler(svcCtx *svc.ServiceContext) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := readJSONBody(w, r, svcCtx.Config.Limits.BodyBytes)
		if err != nil {
			writeError(svcCtx, w, r, err)
			return
		}
		sub, err := report.ParseSubmission(body)
		if err != nil {
			writeError(svcCtx, w, r, err)
			return
		}
		resp, err := logic.NewSubmitReportLogic(r.Context(), svcCtx).SubmitReport(sub)
		if err != nil {
			writeError(svcCtx, w, r, err)
			return
		}
		code := http.StatusAccepted
		if resp.Status == logic.StatusDuplicate { // the original receipt: nothing new was accepted
			code = http.StatusOK
		}
		httpx.WriteJsonCtx(r.Context(), w, code, resp)
	}
}
