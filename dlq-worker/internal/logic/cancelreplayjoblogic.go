package logic

import (
	"context"

	"github.com/epro-intake/dlq-worker/internal/svc"
	"github.com/epro-intake/dlq-worker/internal/types"
)

type CancelReplayJobLogic struct{ base }

func NewCancelReplayJobLogic(ctx context.Context, svcCtx *svc.ServiceContext) *CancelReplayJobLogic {
	return &CancelReplayJobLogic{newBase(ctx, svcCtx)}
}

// CancelReplayJob ends a running or paused job; the dead letters it had not replayed stay new.
func (l *CancelReplayJobLogic) CancelReplayJob(req *types.IDReq) (*types.JobResp, error) {
	p, err := principal(l.ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := l.queryCtx()
	defer cancel()
	j, err := l.svcCtx.Resolver.CancelJob(ctx, p, req.ID)
	if err != nil {
		return nil, apiError(l.ctx, "replay job", err)
	}
	return jobResp(j), nil
}
