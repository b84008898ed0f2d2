package logic

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"

	"github.com/go-sql-driver/mysql"
	"github.com/zeromicro/go-zero/core/logx"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/reportdb"
	"github.com/epro-intake/common/status"
	"github.com/epro-intake/epro-api/internal/ratelimit"
	"github.com/epro-intake/epro-api/internal/svc"
)

// candidate is a valid submission on its way to Kafka, with the hashes that identify it.
type candidate struct {
	sub report.Submission
	// env is the envelope sub is produced in, the caller's sender included.
	env report.Envelope
	// content is sub.ContentHash(): what a resubmission under the same request id is compared by.
	content [sha256.Size]byte
	// sent is the SHA-256 of sub.Original, the bytes the app sent, returned in the receipt.
	sent [sha256.Size]byte
}

func newCandidate(env report.Envelope) (candidate, error) {
	sub := env.Submission()
	content, err := sub.ContentHash()
	if err != nil { // ParseSubmission checked the answers; this is a bug, not the client's fault
		return candidate{}, err
	}
	return candidate{sub: sub, env: env, content: content, sent: sha256.Sum256(sub.Original)}, nil
}

// receipt is what the API remembers of c once Kafka has it.
func (c candidate) receipt(env report.Envelope) status.Receipt {
	return status.Receipt{PatientID: env.PatientID, ContentSHA256: hex.EncodeToString(c.content[:]),
		SubmissionSHA256: hex.EncodeToString(c.sent[:]), ReceivedAt: env.ReceivedAt}
}

// verdict says what the API knows of a candidate's request id.
type verdict int

const (
	// fresh (the zero value): nothing known under the id, or nothing could be asked: produce it.
	_ verdict = iota
	// duplicate: the id holds the same content; answer with the original receipt and produce nothing.
	duplicate
	// conflict: the id holds other content, or another patient's report; refuse it.
	conflict
)

// known is the verdict on one candidate and, for a duplicate, the original receipt.
type known struct {
	verdict verdict
	receipt status.Receipt
}

// errRequestIDConflict is the answer to a conflict. It names the field but never the content.
func errRequestIDConflict() *errcode.Error {
	e := errcode.New(http.StatusConflict, errcode.RequestIDConflict,
		"this requestId was already used for a different report; send this report under a new requestId")
	e.Field = "requestId"
	return e
}

// admit takes one token per candidate from the client's bucket and from each candidate's patient's, all or
// none (429 RATE_LIMITED when a bucket has too few: nothing is produced), and reads the candidates'
// receipts, in one Redis round trip before anything is produced (ratelimit.Limiter.Take). cs holds distinct
// request ids; a resend of a report accepted before takes its token too, as it costs the same lookups.
func admit(ctx context.Context, svcCtx *svc.ServiceContext, cs []candidate) (ratelimit.Admission, error) {
	if len(cs) == 0 {
		return ratelimit.Admission{}, nil
	}
	perPatient := map[string]int{}
	keys := make([]string, len(cs))
	for i, c := range cs {
		perPatient[c.sub.PatientID]++
		keys[i] = status.ReceiptKey(c.sub.RequestID)
	}
	a, err := svcCtx.RateLimit.Take(ctx, ratelimit.Client(ctx), len(cs), perPatient, keys...)
	if err != nil {
		svcCtx.Metrics.RateLimited(len(cs))
	}
	return a, err
}

// checkRequestIDs judges cs (distinct request ids) by what the API can know: their receipts cached in Redis,
// which admit read (a.Values, in the order of cs), and, for ids Redis cannot settle (Redis unavailable, or a
// receipt written before content hashes), the reports table, in one query. An id Redis answers without a
// receipt is fresh: receipts outlive any retry window (status.TTL), so asking MySQL for every new report
// would buy nothing but a round trip and the database's CPU per report; where the receipt is gone (expired,
// evicted, flushed) epro-mq is the backstop, as it is when neither store can be asked: a true repeat is
// stored once, silently, and other content under a stored id is dead-lettered as a conflict. Logs carry
// request ids and counts only.
func checkRequestIDs(ctx context.Context, svcCtx *svc.ServiceContext, cs []candidate, a ratelimit.Admission) []known {
	out := make([]known, len(cs))
	if len(cs) == 0 {
		return out
	}
	var unsettled []int
	err := a.Unread
	if err == nil && len(a.Values) != len(cs) {
		err = errors.New("receipts not read")
	}
	if err != nil {
		logx.WithContext(ctx).Errorw("request-id check: redis unavailable, asking MySQL", logx.Field("reports", len(cs)), logx.Field("error", err.Error()))
	}
	for i, c := range cs {
		r, cached := status.Receipt{}, false
		if err == nil && a.Values[i] != "" {
			var perr error
			r, perr = status.ParseReceipt(a.Values[i])
			cached = perr == nil
		}
		switch {
		case !cached && err != nil:
			unsettled = append(unsettled, i)
		case !cached: // fresh
		case r.PatientID != c.sub.PatientID:
			out[i] = known{verdict: conflict}
		case r.ContentSHA256 == "": // a receipt that predates content hashes
			unsettled = append(unsettled, i)
		case r.ContentSHA256 == hex.EncodeToString(c.content[:]):
			out[i] = known{verdict: duplicate, receipt: r}
		default:
			out[i] = known{verdict: conflict}
		}
	}
	if len(unsettled) == 0 {
		return out
	}

	ids := make([]string, len(unsettled))
	for j, i := range unsettled {
		ids[j] = cs[i].sub.RequestID
	}
	qctx, cancel := context.WithTimeout(ctx, svcCtx.Config.MySQL.CheckTimeout)
	stored, err := reportdb.Lookup(qctx, svcCtx.DB, ids)
	cancel()
	var me *mysql.MySQLError
	switch {
	case errors.As(err, &me) && me.Number == mysqlNoSuchTable:
		return out // nothing is stored before epro-mq created the table
	case err != nil:
		logx.WithContext(ctx).Errorw("request-id check: mysql unavailable, producing anyway", logx.Field("requestIds", ids), logx.Field("error", err.Error()))
		return out
	}
	for _, i := range unsettled {
		c := cs[i]
		s, ok := stored[c.sub.RequestID]
		switch {
		case !ok:
		case s.PatientID != c.sub.PatientID:
			out[i] = known{verdict: conflict}
		case !s.ContentKnown: // a row whose content cannot be read back; epro-mq will judge the record
		case s.ContentSHA256 == c.content:
			r := status.Receipt{PatientID: s.PatientID, ContentSHA256: hex.EncodeToString(s.ContentSHA256[:]), ReceivedAt: s.ReceivedAt}
			if s.SubmissionSHA256 != nil {
				r.SubmissionSHA256 = hex.EncodeToString(s.SubmissionSHA256)
			}
			out[i] = known{verdict: duplicate, receipt: r}
		default:
			out[i] = known{verdict: conflict}
		}
	}
	return out
}
