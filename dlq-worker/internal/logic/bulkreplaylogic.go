package logic

import (
	"context"

	"github.com/epro-intake/dlq-worker/internal/store"
	"github.com/epro-intake/dlq-worker/internal/svc"
	"github.com/epro-intake/dlq-worker/internal/types"
)

type BulkReplayLogic struct{ base }

func NewBulkReplayLogic(ctx context.Context, svcCtx *svc.ServiceContext) *BulkReplayLogic {
	return &BulkReplayLogic{newBase(ctx, svcCtx)}
}

// BulkReplay counts (dry run) or starts a job replaying the new dead letters the filter matches.
func (l *BulkReplayLogic) BulkReplay(req *types.BulkReplayReq) (*types.BulkReplayResp, error) {
	p, err := principal(l.ctx)
	if err != nil {
		return nil, err
	}
	f := filterOf(store.StatusNew, req.ErrorClass, req.TrialID, req.PatientID, req.From, req.To)
	ctx, cancel := l.queryCtx()
	defer cancel()
	if req.DryRun {
		n, stored, known, err := l.svcCtx.Resolver.DryRun(ctx, f)
		if err != nil {
			return nil, apiError(l.ctx, "bulk replay dry run", err)
		}
		return &types.BulkReplayResp{DryRun: true, Count: n, AlreadyStored: stored, StoredKnown: known}, nil
	}
	job, err := l.svcCtx.Resolver.StartJob(ctx, p, f, req.RatePerSecond)
	if err != nil {
		return nil, apiError(l.ctx, "bulk replay", err)
	}
	return &types.BulkReplayResp{Count: job.Total, Job: jobResp(job)}, nil
}
