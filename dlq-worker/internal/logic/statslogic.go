package logic

import (
	"context"
	"slices"
	"time"

	"github.com/epro-intake/dlq-worker/internal/svc"
	"github.com/epro-intake/dlq-worker/internal/types"
)

type StatsLogic struct{ base }

func NewStatsLogic(ctx context.Context, svcCtx *svc.ServiceContext) *StatsLogic {
	return &StatsLogic{newBase(ctx, svcCtx)}
}

// Stats counts dead letters by status and error class and ages the oldest unresolved one.
func (l *StatsLogic) Stats() (*types.StatsResp, error) {
	ctx, cancel := l.queryCtx()
	defer cancel()
	st, err := l.svcCtx.DeadLetters.Stats(ctx)
	if err != nil {
		return nil, apiError(l.ctx, "stats", err)
	}
	resp := &types.StatsResp{ByStatus: st.ByStatus, ByClass: []types.ClassCounts{}}
	for _, s := range []string{"new", "replayed", "discarded"} {
		if _, ok := resp.ByStatus[s]; !ok {
			resp.ByStatus[s] = 0
		}
	}
	for class, by := range st.ByClass {
		resp.ByClass = append(resp.ByClass, types.ClassCounts{ErrorClass: class, ByStatus: by})
	}
	slices.SortFunc(resp.ByClass, func(a, b types.ClassCounts) int {
		switch {
		case a.ErrorClass < b.ErrorClass:
			return -1
		case a.ErrorClass > b.ErrorClass:
			return 1
		}
		return 0
	})
	if st.OldestNew != nil {
		resp.OldestUnresolvedAt = formatTime(*st.OldestNew)
		resp.OldestUnresolvedAgeSeconds = max(0, time.Since(*st.OldestNew).Seconds())
	}
	return resp, nil
}
