package logic

import (
	"context"
	"errors"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/dlq-worker/internal/replay"
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
	msg, merr := l.svcCtx.Resolver.Message(dl)
	if merr == nil {
		resp.Topic = msg.Topic // a degraded dead letter's comes from its raw record
	}
	switch {
	case dl.Status == store.StatusReplayed:
		resp.Reason = "already replayed"
	case dl.Status == store.StatusDiscarded:
		resp.Reason = "discarded"
	case dl.ErrorClass == report.ErrorClassConflict:
		resp.Reason = "a request-id conflict: its request id is stored with other content; it is reviewed and discarded, never replayed"
	case errors.Is(merr, replay.ErrBytesNotKept):
		resp.Reason = "degraded, and its bytes were not archived: there is nothing to replay"
	case merr != nil:
		resp.Reason = "the original topic is missing or not allowed for replay"
	default:
		resp.Replayable = true
	}
	return resp, nil
}
