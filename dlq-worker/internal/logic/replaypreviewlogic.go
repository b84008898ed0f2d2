package logic

import (
	"context"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/dlq-worker/internal/store"
	"github.com/epro-intake/dlq-worker/internal/svc"
	"github.com/epro-intake/dlq-worker/internal/types"
)

type ReplayPreviewLogic struct{ base }

func NewReplayPreviewLogic(ctx context.Context, svcCtx *svc.ServiceContext) *ReplayPreviewLogic {
	return &ReplayPreviewLogic{newBase(ctx, svcCtx)}
}

// ReplayPreview tells what a replay would do, reading epro-mq's reports table only.
func (l *ReplayPreviewLogic) ReplayPreview(req *types.IDReq) (*types.ReplayPreviewResp, error) {
	ctx, cancel := l.queryCtx()
	defer cancel()
	dl, err := l.svcCtx.DeadLetters.Get(ctx, req.ID)
	if err != nil {
		return nil, apiError(l.ctx, "dead letter", err)
	}
	state, err := l.svcCtx.Resolver.ReportState(ctx, dl)
	if err != nil {
		return nil, apiError(l.ctx, "report state", err)
	}
	resp := &types.ReplayPreviewResp{ID: dl.ID, Status: dl.Status, Topic: dl.OriginalTopic, RequestID: dl.RequestID,
		ReportState: state}
	_, merr := l.svcCtx.Resolver.Message(dl)
	switch {
	case dl.Status == store.StatusReplayed:
		resp.Reason = "already replayed"
	case dl.Status == store.StatusDiscarded:
		resp.Reason = "discarded"
	case dl.ErrorClass == report.ErrorClassConflict:
		resp.Reason = "a request-id conflict: its request id is stored with other content; it is reviewed and discarded, never replayed"
	case merr != nil:
		resp.Reason = "the original topic is missing or not allowed for replay"
	default:
		resp.Replayable = true
	}
	return resp, nil
}
