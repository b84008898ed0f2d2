package logic

import (
	"context"

	"github.com/epro-intake/dlq-worker/internal/svc"
	"github.com/epro-intake/dlq-worker/internal/types"
)

type ResumeReplayJobLogic struct{ base }

func NewResumeReplayJobLogic(ctx context.Context, svcCtx *svc.ServiceContext) *ResumeReplayJobLogic {
	return &ResumeReplayJobLogic{newBase(ctx, svcCtx)}
}

// ResumeReplayJob continues a paused job (paused by an operator, or by itself once the operator fixed the
// cause) where it stopped.
func (l *ResumeReplayJobLogic) ResumeReplayJob(req *types.IDReq) (*types.JobResp, error) {
	p, err := principal(l.ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := l.queryCtx()
	defer cancel()
	j, err := l.svcCtx.Resolver.ResumeJob(ctx, p, req.ID)
	if err != nil {
		return nil, apiError(l.ctx, "replay job", err)
	}
	return jobResp(j), nil
}
