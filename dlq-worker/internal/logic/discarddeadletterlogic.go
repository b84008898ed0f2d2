package logic

import (
	"context"

	"github.com/epro-intake/dlq-worker/internal/store"
	"github.com/epro-intake/dlq-worker/internal/svc"
	"github.com/epro-intake/dlq-worker/internal/types"
)

type DiscardDeadLetterLogic struct{ base }

func NewDiscardDeadLetterLogic(ctx context.Context, svcCtx *svc.ServiceContext) *DiscardDeadLetterLogic {
	return &DiscardDeadLetterLogic{newBase(ctx, svcCtx)}
}

// DiscardDeadLetter marks a new dead letter discarded; the row stays in the archive.
func (l *DiscardDeadLetterLogic) DiscardDeadLetter(req *types.DiscardReq) (*types.DiscardResp, error) {
	p, err := principal(l.ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := l.queryCtx()
	defer cancel()
	if err := l.svcCtx.Resolver.Discard(ctx, p, req.ID, req.ReasonCode, req.Note); err != nil {
		return nil, apiError(l.ctx, "dead letter", err)
	}
	return &types.DiscardResp{ID: req.ID, Status: store.StatusDiscarded}, nil
}
