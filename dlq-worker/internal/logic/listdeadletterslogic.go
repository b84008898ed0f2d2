package logic

import (
	"context"

	"github.com/epro-intake/dlq-worker/internal/svc"
	"github.com/epro-intake/dlq-worker/internal/types"
)

type ListDeadLettersLogic struct{ base }

func NewListDeadLettersLogic(ctx context.Context, svcCtx *svc.ServiceContext) *ListDeadLettersLogic {
	return &ListDeadLettersLogic{newBase(ctx, svcCtx)}
}

// ListDeadLetters returns one page, newest first, metadata only.
func (l *ListDeadLettersLogic) ListDeadLetters(req *types.ListReq) (*types.ListResp, error) {
	limit := req.Limit
	if limit == 0 {
		limit = l.svcCtx.Config.List.DefaultLimit
	}
	limit = min(limit, l.svcCtx.Config.List.MaxLimit)
	var before uint64
	if req.Cursor != "" {
		before, _ = types.ParseCursor(req.Cursor)
	}
	ctx, cancel := l.queryCtx()
	defer cancel()
	// One more than the page tells whether a next page exists without a COUNT.
	f := filterOf(req.Status, req.ErrorClass, req.TrialID, req.PatientID, req.From, req.To)
	if req.Degraded != "" {
		degraded := req.Degraded == "true"
		f.Degraded = &degraded
	}
	dls, err := l.svcCtx.DeadLetters.List(ctx, f, before, limit+1)
	if err != nil {
		return nil, apiError(l.ctx, "list dead letters", err)
	}
	resp := &types.ListResp{Items: make([]types.DeadLetterSummary, 0, min(len(dls), limit))}
	for i, dl := range dls {
		if i == limit {
			resp.NextCursor = types.Cursor(dls[i-1].ID)
			break
		}
		resp.Items = append(resp.Items, summary(dl))
	}
	return resp, nil
}
