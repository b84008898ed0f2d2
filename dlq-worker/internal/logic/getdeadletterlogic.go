package logic

import (
	"context"
	"encoding/base64"
	"net/http"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/dlq-worker/internal/auth"
	"github.com/epro-intake/dlq-worker/internal/replay"
	"github.com/epro-intake/dlq-worker/internal/store"
	"github.com/epro-intake/dlq-worker/internal/svc"
	"github.com/epro-intake/dlq-worker/internal/types"
)

type GetDeadLetterLogic struct{ base }

func NewGetDeadLetterLogic(ctx context.Context, svcCtx *svc.ServiceContext) *GetDeadLetterLogic {
	return &GetDeadLetterLogic{newBase(ctx, svcCtx)}
}

// GetDeadLetter returns one dead letter with its history. The payload is included only when reveal is asked
// for explicitly, by an operator, and only after the reveal's audit row is written.
func (l *GetDeadLetterLogic) GetDeadLetter(req *types.GetReq) (*types.DeadLetterDetail, error) {
	p, err := principal(l.ctx)
	if err != nil {
		return nil, err
	}
	if req.Reveal && !p.Can(auth.RoleOperator) {
		return nil, errcode.New(http.StatusForbidden, errcode.Forbidden, "revealing a payload needs the operator role")
	}
	ctx, cancel := l.queryCtx()
	defer cancel()
	dl, err := l.svcCtx.DeadLetters.Get(ctx, req.ID)
	if err != nil {
		return nil, apiError(l.ctx, "dead letter", err)
	}
	if req.Reveal {
		entry := p.Audit(store.ActionReveal)
		entry.Outcome, entry.DeadLetterID, entry.StateBefore, entry.StateAfter = store.OutcomeOK, dl.ID, dl.Status, dl.Status
		if err := l.svcCtx.Audit.Append(ctx, entry); err != nil {
			return nil, apiError(l.ctx, "audit reveal", err)
		}
	}
	history, err := l.svcCtx.Audit.ForDeadLetter(ctx, dl.ID)
	if err != nil {
		return nil, apiError(l.ctx, "dead letter history", err)
	}
	state, err := l.svcCtx.Resolver.ReportState(ctx, dl)
	if err != nil {
		l.Errorf("report state of dead letter %d: %v", dl.ID, err)
		state = replay.ReportUnknown
	}
	d := &types.DeadLetterDetail{
		DeadLetterSummary:     summary(dl),
		DLQTopic:              dl.DLQTopic,
		DLQPartition:          dl.DLQPartition,
		DLQOffset:             dl.DLQOffset,
		OriginalTimestamp:     formatTimePtr(dl.OriginalTimestamp),
		OriginalConsumerGroup: dl.OriginalGroup,
		FirstFailure:          formatTimePtr(dl.FirstFailure),
		LastFailure:           formatTimePtr(dl.LastFailure),
		IngestedAt:            formatTime(dl.IngestedAt),
		ResolvedAt:            formatTimePtr(dl.ResolvedAt),
		ResolvedBy:            dl.ResolvedBy,
		DiscardReason:         dl.DiscardReason,
		Headers:               make([]types.Header, 0, len(dl.Headers)),
		PayloadBytes:          len(dl.Value),
		ReportState:           state,
		History:               auditEntries(history),
	}
	for _, h := range dl.Headers {
		d.Headers = append(d.Headers, types.Header{Key: h.Key, Value: h.Value, Base64: h.Base64})
	}
	if req.Reveal {
		d.Revealed = true
		key, value := dl.Key, dl.Value
		// A degraded dead letter's columns hold what fitted; the record as read is its raw copy.
		if raw, err := store.UnmarshalRawRecord(dl.Raw); dl.Raw != nil && err == nil {
			key, value = raw.Key, raw.Value
		}
		d.Payload = base64.StdEncoding.EncodeToString(value)
		d.Key = base64.StdEncoding.EncodeToString(key)
	}
	return d, nil
}
