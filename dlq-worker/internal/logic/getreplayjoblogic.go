package logic

import (
	"context"

	"github.com/epro-intake/dlq-worker/internal/svc"
	"github.com/epro-intake/dlq-worker/internal/types"
)

type GetReplayJobLogic struct{ base }

func NewGetReplayJobLogic(ctx context.Context, svcCtx *svc.ServiceContext) *GetReplayJobLogic {
	return &GetReplayJobLogic{newBase(ctx, svcCtx)}
}

// GetReplayJob returns a bulk job's progress.
func (l *GetReplayJobLogic) GetReplayJob(req *types.IDReq) (*types.JobResp, error) {
	ctx, cancel := l.queryCtx()
	defer cancel()
	j, err := l.svcCtx.Resolver.Job(ctx, req.ID)
	if err != nil {
		return nil, apiError(l.ctx, "replay job", err)
	}
	return jobResp(j), nil
}
