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
	"github.com/epro-intake/common/status"
	"github.com/epro-intake/epro-api/internal/metrics"
	"github.com/epro-intake/epro-api/internal/middleware"
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

// SubmitBatch judges each item on its own, takes the valid ones' tokens from the rate limits and produces the
// new ones in one Send. It answers 200 with a result per item whatever happened to the items (207
// Multi-Status is WebDAV's, with an XML body clients do not expect), except when Kafka took none of the items
// it was given: then the whole request is a 503 with Retry-After, so that a client that only looks at the
// status code sends the batch again.
//
// The batch is limited as a whole (admit, one Redis round trip for the batch, which also reads the receipts):
// one token per valid item from the client's bucket and from the patient's, all or none; when a bucket has
// too few the answer is 429 with Retry-After and nothing of the batch is produced, rather than some items
// accepted and the rest refused. An app syncing after being offline then simply sends the same batch again
// after Retry-After, as it does after a 503, and the default buckets hold weeks of a patient's reports, so a
// normal sync never meets the limit. Rejected items, and items repeating an earlier item's request id, take
// no token.
//
// Request ids are judged as for one report (checkRequestIDs, on the receipts admit read, and at most one
// MySQL query for the batch): a retry of a report accepted before is a duplicate with its original receipt,
// other content under a used id a conflict. An item repeating an earlier item's request id shares that item's
// outcome when its content is the same (a duplicate of it once accepted), and is a conflict when it differs.
func (l *SubmitBatchLogic) SubmitBatch(items []json.RawMessage) (*types.BatchResp, error) {
	now := l.now()
	resp := &types.BatchResp{Results: make([]types.BatchItemResult, len(items))}
	type repeat struct {
		item, of int // the item, and the candidate whose request id it repeats
		same     bool
	}
	var (
		cands   []candidate
		candIdx []int              // candIdx[j] is the item index of cands[j]
		first   = map[string]int{} // canonical request id -> its candidate
		repeats []repeat
	)
	for i, raw := range items {
		res := &resp.Results[i]
		res.Index = i
		c, err := l.prepare(raw, now)
		if err != nil {
			l.reject(res, err)
			resp.Rejected++
			if id, ok := report.CanonicalRequestID(c.sub.RequestID); ok {
				res.RequestID = id
			}
			continue
		}
		res.RequestID = c.sub.RequestID
		if j, dup := first[c.sub.RequestID]; dup {
			repeats = append(repeats, repeat{item: i, of: j, same: cands[j].content == c.content})
			continue
		}
		first[c.sub.RequestID] = len(cands)
		cands = append(cands, c)
		candIdx = append(candIdx, i)
	}

	a, err := admit(l.ctx, l.svcCtx, cands)
	if err != nil {
		return nil, err
	}

	var (
		msgs    []kafka.Message
		envs    []report.Envelope // envs[k] is the envelope of msgs[k]
		msgCand []int             // msgCand[k] is the candidate of msgs[k]
	)
	for j, k := range checkRequestIDs(l.ctx, l.svcCtx, cands, a) {
		res := &resp.Results[candIdx[j]]
		switch k.verdict {
		case duplicate:
			setDuplicate(res, formatTime(k.receipt.ReceivedAt), k.receipt.SubmissionSHA256)
			resp.Duplicate++
			continue
		case conflict:
			setConflict(res)
			resp.Conflict++
			continue
		}
		env := cands[j].env
		msg, err := reportMessage(l.ctx, l.svcCtx.Config.Topic, env)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, msg)
		envs = append(envs, env)
		msgCand = append(msgCand, j)
	}

	receipts := map[string]status.Receipt{}
	if len(msgs) > 0 {
		failed := l.send(msgs)
		for k, j := range msgCand {
			res := &resp.Results[candIdx[j]]
			if failed[k] {
				setUnavailable(res)
				resp.Unavailable++
				continue
			}
			r := cands[j].receipt(envs[k])
			res.Status = statusAccepted
			res.ReceivedAt = formatTime(now)
			res.SubmissionSHA256 = r.SubmissionSHA256
			resp.Accepted++
			countAccepted(l.svcCtx, envs[k])
			receipts[envs[k].RequestID] = r
		}
	}
	for _, r := range repeats {
		res, of := &resp.Results[r.item], resp.Results[candIdx[r.of]]
		switch {
		case !r.same || of.Status == statusConflict:
			setConflict(res)
			resp.Conflict++
		case of.Status == statusAccepted || of.Status == StatusDuplicate:
			setDuplicate(res, of.ReceivedAt, of.SubmissionSHA256)
			resp.Duplicate++
		default: // unavailable: resend it with the item it repeats
			setUnavailable(res)
			resp.Unavailable++
		}
	}
	if resp.Unavailable > 0 && resp.Accepted == 0 && len(msgs) > 0 {
		return nil, unavailable(l.svcCtx, "no report of the batch could be stored right now; send the batch again later")
	}
	l.countItems(resp.Results)
	markAccepted(l.ctx, l.svcCtx, receipts)
	return resp, nil
}

// countItems counts each item's outcome and each refused item's error code (accepted ones were counted as
// they were acknowledged, with their upload delay).
func (l *SubmitBatchLogic) countItems(results []types.BatchItemResult) {
	m := l.svcCtx.Metrics
	for i := range results {
		res := &results[i]
		switch res.Status {
		case StatusDuplicate:
			m.Report(metrics.OutcomeDuplicate)
		case statusConflict:
			m.Report(metrics.OutcomeConflict)
		}
		if res.Error != nil {
			m.Rejected(res.Error.Code)
		}
	}
}

func setDuplicate(res *types.BatchItemResult, receivedAt, submissionSHA256 string) {
	res.Status, res.ReceivedAt, res.SubmissionSHA256 = StatusDuplicate, receivedAt, submissionSHA256
}

func setConflict(res *types.BatchItemResult) {
	e := errRequestIDConflict()
	res.Status = statusConflict
	res.Error = &types.ItemError{Code: e.Code, Message: e.Message, Field: e.Field}
}

func setUnavailable(res *types.BatchItemResult) {
	res.Status = statusUnavailable
	res.Error = &types.ItemError{Code: errcode.IngestUnavailable, Message: "the report could not be stored right now; send it again later"}
}

// prepare parses and validates one item. On error the returned candidate holds whatever request id the item
// had, for the caller to report back only if it is a well-formed UUID.
func (l *SubmitBatchLogic) prepare(raw json.RawMessage, now time.Time) (candidate, error) {
	limit := l.svcCtx.Config.Limits.BodyBytes
	if int64(len(raw)) > limit {
		return candidate{}, errcode.New(http.StatusRequestEntityTooLarge, errcode.PayloadTooLarge,
			fmt.Sprintf("the report is larger than %d bytes", limit))
	}
	// raw is the item exactly as it stood in the array: ParseSubmission keeps it as the Original.
	sub, err := report.ParseSubmission(raw)
	if err != nil {
		return candidate{}, err
	}
	if err := sub.Validate(now, l.svcCtx.Config.Limits.Report()); err != nil {
		return candidate{sub: report.Submission{RequestID: sub.RequestID}}, err
	}
	env, err := envelopeFor(l.ctx, sub, now)
	if err != nil {
		return candidate{sub: report.Submission{RequestID: sub.RequestID}}, err
	}
	middleware.NoteRequestID(l.ctx, sub.RequestID)
	return newCandidate(env)
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
	err := produce(ctx, l.svcCtx, msgs...)
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
