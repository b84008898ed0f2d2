package logic

import (
	"context"
	"time"

	"github.com/zeromicro/go-zero/core/logx"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/status"
	"github.com/epro-intake/epro-api/internal/metrics"
	"github.com/epro-intake/epro-api/internal/middleware"
	"github.com/epro-intake/epro-api/internal/svc"
	"github.com/epro-intake/epro-api/internal/types"
)

type SubmitReportLogic struct {
	logx.Logger
	ctx    context.Context
	svcCtx *svc.ServiceContext
	now    func() time.Time
}

func NewSubmitReportLogic(ctx context.Context, svcCtx *svc.ServiceContext) *SubmitReportLogic {
	return &SubmitReportLogic{
		Logger: logx.WithContext(ctx),
		ctx:    ctx,
		svcCtx: svcCtx,
		now:    time.Now,
	}
}

// SubmitReport validates sub, takes its token from the client's and the patient's rate limits (429 and nothing
// produced when either is spent; one Redis round trip, which also reads the request id's receipt) and returns
// only once Kafka acknowledged it with acks=all. Any produce failure, the timeout included, is a 503: the
// client keeps the report and sends it again with the same requestId. A retry of a report accepted before
// returns that report's receipt (status duplicate) without producing; a different report under a used
// requestId is a 409 (see checkRequestIDs).
func (l *SubmitReportLogic) SubmitReport(sub report.Submission) (*types.AcceptedResp, error) {
	now := l.now()
	if err := sub.Validate(now, l.svcCtx.Config.Limits.Report()); err != nil {
		return nil, err
	}
	middleware.NoteRequestID(l.ctx, sub.RequestID)
	env, err := envelopeFor(l.ctx, sub, now)
	if err != nil {
		return nil, err
	}
	c, err := newCandidate(env)
	if err != nil {
		return nil, err
	}
	cs := []candidate{c}
	a, err := admit(l.ctx, l.svcCtx, cs)
	if err != nil {
		return nil, err
	}
	switch k := checkRequestIDs(l.ctx, l.svcCtx, cs, a)[0]; k.verdict {
	case duplicate:
		l.svcCtx.Metrics.Report(metrics.OutcomeDuplicate)
		return &types.AcceptedResp{
			RequestID: sub.RequestID, Status: StatusDuplicate,
			ReceivedAt: formatTime(k.receipt.ReceivedAt), SubmissionSHA256: k.receipt.SubmissionSHA256,
		}, nil
	case conflict:
		l.svcCtx.Metrics.Report(metrics.OutcomeConflict)
		return nil, errRequestIDConflict()
	}
	msg, err := reportMessage(l.ctx, l.svcCtx.Config.Topic, env)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(l.ctx, l.svcCtx.Config.ProduceTimeout)
	defer cancel()
	if err := produce(ctx, l.svcCtx, msg); err != nil {
		l.Errorw("produce report", logx.Field("requestId", env.RequestID), logx.Field("error", err.Error()))
		return nil, unavailable(l.svcCtx, "the report could not be stored right now; send it again later")
	}

	countAccepted(l.svcCtx, env)
	receipt := c.receipt(env)
	markAccepted(l.ctx, l.svcCtx, map[string]status.Receipt{env.RequestID: receipt})
	return &types.AcceptedResp{
		RequestID:        env.RequestID,
		Status:           statusAccepted,
		ReceivedAt:       formatTime(env.ReceivedAt),
		SubmissionSHA256: receipt.SubmissionSHA256,
	}, nil
}
