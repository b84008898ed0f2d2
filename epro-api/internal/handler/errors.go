package handler

import (
	"net/http"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/epro-api/internal/svc"
)

// writeError writes err as errcode.Write does and counts it in epro_api_rejections_total by its code.
func writeError(svcCtx *svc.ServiceContext, w http.ResponseWriter, r *http.Request, err error) {
	_, e := errcode.Response(err)
	svcCtx.Metrics.Rejected(e.Code)
	errcode.Write(r.Context(), w, err)
}
