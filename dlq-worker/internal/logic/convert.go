package logic

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/zeromicro/go-zero/core/logx"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/dlq-worker/internal/auth"
	"github.com/epro-intake/dlq-worker/internal/reconcile"
	"github.com/epro-intake/dlq-worker/internal/replay"
	"github.com/epro-intake/dlq-worker/internal/store"
	"github.com/epro-intake/dlq-worker/internal/types"
)

// Codes of this API that common/errcode does not have yet. Stable: clients switch on them.
const (
	// CodeAlreadyReplayed answers a replay of a dead letter that was replayed before (409).
	CodeAlreadyReplayed = "ALREADY_REPLAYED"
	// CodeConflictNotReplayable answers a replay of a request-id conflict (error class conflict) (409).
	CodeConflictNotReplayable = "CONFLICT_NOT_REPLAYABLE"
	// CodeReplayUnavailable answers a replay Kafka did not acknowledge (503); the dead letter stays new.
	CodeReplayUnavailable = "REPLAY_UNAVAILABLE"
	// CodeNotReady answers /readyz while MySQL does not answer (503).
	CodeNotReady = "NOT_READY"
)

// retryAfterSeconds is sent with REPLAY_UNAVAILABLE.
const retryAfterSeconds = 5

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func formatTimePtr(t *time.Time) string {
	if t == nil {
		return ""
	}
	return formatTime(*t)
}

func summary(dl store.DeadLetter) types.DeadLetterSummary {
	s := types.DeadLetterSummary{
		ID: dl.ID, Status: dl.Status, ErrorClass: dl.ErrorClass, ErrorMessage: dl.ErrorMessage,
		Attempts: dl.Attempts, RequestID: dl.RequestID, PatientID: dl.PatientID, TrialID: dl.TrialID,
		OriginalTopic: dl.OriginalTopic, OriginalPartition: dl.OriginalPartition, OriginalOffset: dl.OriginalOffset,
		DeadLetteredAt: formatTime(dl.DeadLetteredAt), Degraded: dl.Degraded, DegradedReason: dl.DegradedReason,
	}
	if dl.ReplayOf != nil {
		s.ReplayOf = *dl.ReplayOf
	}
	return s
}

func auditEntries(es []store.AuditEntry) []types.AuditEntry {
	out := make([]types.AuditEntry, 0, len(es))
	for _, e := range es {
		out = append(out, types.AuditEntry{ID: e.ID, At: formatTime(e.At), Actor: e.Actor, ActorIssuer: e.ActorIssuer,
			Role: e.Role, ClientAddr: e.ClientAddr, Action: e.Action, Outcome: e.Outcome, DeadLetterID: e.DeadLetterID,
			JobID: e.JobID, StateBefore: e.StateBefore, StateAfter: e.StateAfter, ReasonCode: e.ReasonCode,
			Reason: e.Reason})
	}
	return out
}

func jobResp(j store.Job) *types.JobResp {
	return &types.JobResp{ID: j.ID, Actor: j.Actor, State: j.State, StateReason: j.StateReason, LastError: j.LastError, Total: j.Total,
		Done: j.Done, Failed: j.Failed, Skipped: j.Skipped, RedeadLettered: j.RedeadLettered,
		RatePerSecond: j.RatePerSecond, CreatedAt: formatTime(j.CreatedAt), UpdatedAt: formatTime(j.UpdatedAt)}
}

// principal returns the caller the auth middleware put in ctx. Its absence is a wiring bug, answered as 401
// rather than acting without an actor for the audit trail.
func principal(ctx context.Context) (auth.Principal, error) {
	p, ok := auth.FromContext(ctx)
	if !ok {
		return auth.Principal{}, errcode.New(http.StatusUnauthorized, errcode.Unauthorized, "a bearer token is required")
	}
	return p, nil
}

// apiError maps domain errors to API errors. Anything unexpected is logged here, once, and answered as a
// 500 that says nothing about the cause.
func apiError(ctx context.Context, what string, err error) error {
	var ae *errcode.Error
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, store.ErrNotFound):
		return errcode.New(http.StatusNotFound, errcode.NotFound, "no such "+what)
	case errors.Is(err, replay.ErrAlreadyReplayed):
		return errcode.New(http.StatusConflict, CodeAlreadyReplayed, "already replayed: this dead letter was replayed before, nothing was sent")
	case errors.Is(err, replay.ErrConflictNotReplayable):
		return errcode.New(http.StatusConflict, CodeConflictNotReplayable, "this dead letter is a request-id conflict: "+
			"its request id is stored with other content, which a replay must not replace; nothing was sent")
	case errors.Is(err, replay.ErrBytesNotKept):
		return errcode.New(http.StatusConflict, errcode.Conflict, "this dead letter is degraded and its bytes were not "+
			"archived, so it cannot be replayed; nothing was sent")
	case errors.Is(err, replay.ErrDiscarded):
		return errcode.New(http.StatusConflict, errcode.Conflict, "this dead letter was discarded and cannot be replayed")
	case errors.Is(err, replay.ErrResolved):
		return errcode.New(http.StatusConflict, errcode.Conflict, "this dead letter is already resolved")
	case errors.Is(err, replay.ErrTopicNotAllowed):
		return errcode.New(http.StatusConflict, errcode.Conflict, "the dead letter's original topic is missing or not allowed for replay")
	case errors.Is(err, replay.ErrJobState):
		return errcode.New(http.StatusConflict, errcode.Conflict,
			"the job's state does not allow this: pause needs running, resume needs paused, cancel needs running or paused")
	case errors.Is(err, replay.ErrNothingToReplay):
		return errcode.New(http.StatusConflict, errcode.Conflict, "no new dead letter matches the filter")
	case errors.Is(err, reconcile.ErrBusy):
		return errcode.New(http.StatusConflict, errcode.Conflict, "a reconciliation or re-drive is running; wait for its result (GET /v1/reconciliations)")
	case errors.Is(err, reconcile.ErrNotRedrivable):
		return errcode.New(http.StatusConflict, errcode.Conflict, "only a finished run's missing records are re-driven, once; "+
			"start a new reconciliation to find what is still missing")
	case errors.Is(err, replay.ErrProduce):
		return &errcode.Error{Status: http.StatusServiceUnavailable, Code: CodeReplayUnavailable,
			Message: "Kafka did not acknowledge the replay; the dead letter is unchanged, try again later", RetryAfter: retryAfterSeconds}
	}
	logx.WithContext(ctx).Errorf("%s: %v", what, err)
	return errcode.New(http.StatusInternalServerError, errcode.Internal, "internal error")
}

func filterOf(status, errorClass, trialID, patientID, from, to string) store.Filter {
	return store.Filter{Status: status, ErrorClass: errorClass, TrialID: trialID, PatientID: patientID,
		From: types.ParseTime(from), To: types.ParseTime(to)}
}

func (l *base) queryCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(l.ctx, l.svcCtx.Config.MySQL.QueryTimeout)
}
