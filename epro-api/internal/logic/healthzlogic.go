package logic

import (
	"context"

	"github.com/epro-intake/epro-api/internal/svc"
	"github.com/epro-intake/epro-api/internal/types"
)

type HealthzLogic struct {
	ctx    context.Context
	svcCtx *svc.ServiceContext
}

func NewHealthzLogic(ctx context.Context, svcCtx *svc.ServiceContext) *HealthzLogic {
	return &HealthzLogic{ctx: ctx, svcCtx: svcCtx}
}

// Healthz says the process serves HTTP. It checks no dependency: restarting the API does not bring Kafka back.
func (l *HealthzLogic) Healthz() *types.HealthResp {
	return &types.HealthResp{Status: "ok"}
}
