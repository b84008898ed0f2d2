package logic

import (
	"context"

	"github.com/epro-intake/dlq-worker/internal/svc"
	"github.com/epro-intake/dlq-worker/internal/types"
)

type PauseReplayJobLogic struct{ base }

func NewPauseReplayJobLogic(ctx context.Context, svcCtx *svc.ServiceContext) *PauseReplayJobLogic {
	return &PauseReplayJobLogic{newBase(ctx, svcCtx)}
}

// PauseReplayJob stops a running job before its next item, on whichever replica runs it.
func (l *PauseReplayJobLogic) PauseReplayJob(req *types.IDReq) (*types.JobResp, error) {
	p, err := principal(l.ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := l.queryCtx()
	defer cancel()
	j, err := l.svcCtx.Resolver.PauseJob(ctx, p, req.ID)
	if err != nil {
		return nil, apiError(l.ctx, "replay job", err)
	}
	return jobResp(j), nil
}
