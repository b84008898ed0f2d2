package logic

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/zeromicro/go-zero/core/logx"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/epro-api/internal/middleware"
	"github.com/epro-intake/epro-api/internal/ratelimit"
	"github.com/epro-intake/epro-api/internal/svc"
	"github.com/epro-intake/epro-api/internal/types"
)

type SubmitBatchLogic struct {
	logx.Logger
	ctx    context.Context
	svcCtx *svc.ServiceContext
	now    func() time.Time
}

func NewSubmitBatchLogic(ctx context.Context, svcCtx *svc.ServiceContext) *SubmitBatchLogic {
	return &SubmitBatchLogic{
		Logger: logx.WithContext(ctx),
		ctx:    ctx,
		svcCtx: svcCtx,
		now:    time.Now,
	}
}

// SubmitBatch judges each item on its own, takes the valid ones' tokens from the rate limits (see takeTokens)
// and produces them in one Send. It answers 200 with a result per item whatever happened to the items (207
// Multi-Status is WebDAV's, with an XML body clients do not expect), except when Kafka took none of the valid
// items: then the whole request is a 503 with Retry-After, so that a client that only looks at the status
// code sends the batch again.
func (l *SubmitBatchLogic) SubmitBatch(items []json.RawMessage) (*types.BatchResp, error) {
	now := l.now()
	resp := &types.BatchResp{Results: make([]types.BatchItemResult, len(items))}
	var (
		msgs   []kafka.Message
		envs   []report.Envelope  // envs[j] is the envelope of msgs[j]
		msgIdx []int              // msgIdx[j] is the item index of msgs[j]
		seen   = map[string]int{} // canonical request id -> first item index
	)
	for i, raw := range items {
		res := &resp.Results[i]
		res.Index = i
		env, err := l.prepare(raw, now, seen, i)
		if err != nil {
			l.reject(res, err)
			resp.Rejected++
			if id, ok := report.CanonicalRequestID(env.RequestID); ok {
				res.RequestID = id
			}
			continue
		}
		res.RequestID = env.RequestID
		msg, err := reportMessage(l.ctx, l.svcCtx.Config.Topic, env)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, msg)
		envs = append(envs, env)
		msgIdx = append(msgIdx, i)
	}

	if err := l.takeTokens(envs); err != nil {
		return nil, err
	}

	var accepted []report.Envelope
	if len(msgs) > 0 {
		failed := l.send(msgs)
		for j, i := range msgIdx {
			res := &resp.Results[i]
			if failed[j] {
				res.Status = statusUnavailable
				res.Error = &types.ItemError{Code: errcode.IngestUnavailable, Message: "the report could not be stored right now; send it again later"}
				resp.Unavailable++
				continue
			}
			res.Status = statusAccepted
			res.ReceivedAt = formatTime(now)
			resp.Accepted++
			accepted = append(accepted, envs[j])
		}
	}
	if resp.Unavailable > 0 && resp.Accepted == 0 {
		return nil, unavailable(l.svcCtx, "no report of the batch could be stored right now; send the batch again later")
	}
	markAccepted(l.ctx, l.svcCtx, accepted...)
	return resp, nil
}

// takeTokens takes one token per report about to be produced from the client's bucket and from each
// patient's. The batch is limited as a whole: when a bucket has too few tokens the answer is 429 with
// Retry-After and nothing of the batch is produced, rather than some items accepted and the rest refused. An
// app syncing after being offline then simply sends the same batch again after Retry-After, as it does after
// a 503, and the default buckets hold weeks of a patient's reports, so a normal sync never meets the limit.
// Rejected items take no token.
func (l *SubmitBatchLogic) takeTokens(envs []report.Envelope) error {
	perPatient := map[string]int{}
	for _, env := range envs {
		perPatient[env.PatientID]++
	}
	return l.svcCtx.RateLimit.Take(l.ctx, ratelimit.Client(l.ctx), len(envs), perPatient)
}

// prepare parses and validates one item. On error the returned envelope holds whatever request id the item
// had, for the caller to report back only if it is a well-formed UUID.
func (l *SubmitBatchLogic) prepare(raw json.RawMessage, now time.Time, seen map[string]int, i int) (report.Envelope, error) {
	limit := l.svcCtx.Config.Limits.BodyBytes
	if int64(len(raw)) > limit {
		return report.Envelope{}, errcode.New(http.StatusRequestEntityTooLarge, errcode.PayloadTooLarge,
			fmt.Sprintf("the report is larger than %d bytes", limit))
	}
	sub, err := report.ParseSubmission(raw)
	if err != nil {
		return report.Envelope{}, err
	}
	if err := sub.Validate(now, l.svcCtx.Config.Limits.Report()); err != nil {
		return report.Envelope{RequestID: sub.RequestID}, err
	}
	if first, dup := seen[sub.RequestID]; dup {
		return report.Envelope{RequestID: sub.RequestID}, errcode.Field(errcode.ValidationFailed, "requestId",
			fmt.Sprintf("repeats the requestId of reports[%d]", first))
	}
	seen[sub.RequestID] = i
	middleware.NoteRequestID(l.ctx, sub.RequestID)
	return sub.Envelope(now), nil
}

func (l *SubmitBatchLogic) reject(res *types.BatchItemResult, err error) {
	res.Status = statusRejected
	_, e := errcode.Response(err)
	res.Error = &types.ItemError{Code: e.Code, Message: e.Message, Field: e.Field}
}

// send produces msgs and returns which of them failed. kafka.WriteErrors is index-aligned with msgs; any
// other error (timeout, no metadata) means none can be counted as stored.
func (l *SubmitBatchLogic) send(msgs []kafka.Message) []bool {
	failed := make([]bool, len(msgs))
	ctx, cancel := context.WithTimeout(l.ctx, l.svcCtx.Config.ProduceTimeout)
	defer cancel()
	err := l.svcCtx.Producer.Send(ctx, msgs...)
	if err == nil {
		return failed
	}
	var werrs kafka.WriteErrors
	if errors.As(err, &werrs) && len(werrs) == len(msgs) {
		for j, werr := range werrs {
			failed[j] = werr != nil
		}
	} else {
		for j := range failed {
			failed[j] = true
		}
	}
	l.Errorw("produce batch", logx.Field("reports", len(msgs)), logx.Field("error", err.Error()))
	return failed
}
