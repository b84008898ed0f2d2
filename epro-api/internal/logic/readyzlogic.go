package logic

import (
	"context"

	"github.com/epro-intake/epro-api/internal/svc"
	"github.com/epro-intake/epro-api/internal/types"
)

type ReadyzLogic struct {
	ctx    context.Context
	svcCtx *svc.ServiceContext
}

func NewReadyzLogic(ctx context.Context, svcCtx *svc.ServiceContext) *ReadyzLogic {
	return &ReadyzLogic{ctx: ctx, svcCtx: svcCtx}
}

// Readyz is ready while the background Kafka ping is recent. MySQL and Redis do not count: without them
// intake still works, only the status endpoint does not.
func (l *ReadyzLogic) Readyz() (*types.HealthResp, error) {
	if !l.svcCtx.Readiness.Ready() {
		return nil, unavailable(l.svcCtx, "Kafka is not reachable for the report topic")
	}
	return &types.HealthResp{Status: "ready"}, nil
}
