package handler

import (
	"net/http"

	"github.com/zeromicro/go-zero/rest/httpx"

	"github.com/epro-intake/epro-api/internal/logic"
	"github.com/epro-intake/epro-api/internal/svc"
)

func HealthzHandler(svcCtx *svc.ServiceContext) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		httpx.OkJsonCtx(r.Context(), w, logic.NewHealthzLogic(r.Context(), svcCtx).Healthz())
	}
}
