package logic

import (
	"context"

	"github.com/epro-intake/dlq-worker/internal/svc"
	"github.com/epro-intake/dlq-worker/internal/types"
)

type DiscardReasonsLogic struct{ base }

func NewDiscardReasonsLogic(ctx context.Context, svcCtx *svc.ServiceContext) *DiscardReasonsLogic {
	return &DiscardReasonsLogic{newBase(ctx, svcCtx)}
}

func (l *DiscardReasonsLogic) DiscardReasons() (*types.DiscardReasonsResp, error) {
	return &types.DiscardReasonsResp{Codes: append([]string(nil), types.DiscardReasonCodes...)}, nil
}
