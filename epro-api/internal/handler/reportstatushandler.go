package handler

import (
	"net/http"

	"github.com/zeromicro/go-zero/rest/httpx"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/epro-api/internal/logic"
	"github.com/epro-intake/epro-api/internal/svc"
	"github.com/epro-intake/epro-api/internal/types"
)

func ReportStatusHandler(svcCtx *svc.ServiceContext) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req types.ReportStatusReq
		// Path only: httpx.Parse would also read the query and body, which this route does not take.
		if err := httpx.ParsePath(r, &req); err != nil {
			writeError(svcCtx, w, r, errcode.Field(errcode.InvalidRequestID, "requestId", "must be a UUID"))
			return
		}
		resp, err := logic.NewReportStatusLogic(r.Context(), svcCtx).ReportStatus(&req)
		if err != nil {
			writeError(svcCtx, w, r, err)
			return
		}
		httpx.OkJsonCtx(r.Context(), w, resp)
	}
}
