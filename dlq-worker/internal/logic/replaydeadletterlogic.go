package logic

import (
	"context"

	"github.com/epro-intake/dlq-worker/internal/replay"
	"github.com/epro-intake/dlq-worker/internal/store"
	"github.com/epro-intake/dlq-worker/internal/svc"
	"github.com/epro-intake/dlq-worker/internal/types"
)

type ReplayDeadLetterLogic struct{ base }

func NewReplayDeadLetterLogic(ctx context.Context, svcCtx *svc.ServiceContext) *ReplayDeadLetterLogic {
	return &ReplayDeadLetterLogic{newBase(ctx, svcCtx)}
}

// ReplayDeadLetter re-produces one dead letter. reportState in the answer is what the reports table said
// before the replay was sent.
func (l *ReplayDeadLetterLogic) ReplayDeadLetter(req *types.IDReq) (*types.ReplayResp, error) {
	p, err := principal(l.ctx)
	if err != nil {
		return nil, err
	}
	qctx, cancel := l.queryCtx()
	dl, err := l.svcCtx.DeadLetters.Get(qctx, req.ID)
	if err != nil {
		cancel()
		return nil, apiError(l.ctx, "dead letter", err)
	}
	state, err := l.svcCtx.Resolver.ReportState(qctx, dl)
	cancel()
	if err != nil {
		l.Errorf("report state of dead letter %d: %v", dl.ID, err)
		state = replay.ReportUnknown
	}
	dl, err = l.svcCtx.Resolver.Replay(l.ctx, p, req.ID)
	if err != nil {
		return nil, apiError(l.ctx, "dead letter", err)
	}
	return &types.ReplayResp{ID: dl.ID, Status: store.StatusReplayed, Topic: dl.OriginalTopic, ReportState: state}, nil
}
