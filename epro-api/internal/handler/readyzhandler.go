package handler

import (
	"github.com/epro-intake/common/errcode"

	"net/http"

	"github.com/zeromicro/go-zero/rest/httpx"

	"github.com/epro-intake/epro-api/internal/logic"
	"github.com/epro-intake/epro-api/internal/svc"
)

func ReadyzHandler(svcCtx *svc.ServiceContext) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		resp, err := logic.NewReadyzLogic(r.Context(), svcCtx).Readyz()
		if err != nil {
			errcode.Write(r.Context(), w, err)
			return
		}
		httpx.OkJsonCtx(r.Context(), w, resp)
	}
}
