package logic

import (
	"context"
	"net/http"
	"time"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/dlq-worker/internal/reconcile"
	"github.com/epro-intake/dlq-worker/internal/svc"
	"github.com/epro-intake/dlq-worker/internal/types"
)

// reconciliationResp converts a run for the API.
func reconciliationResp(st reconcile.RunState) *types.ReconciliationResp {
	resp := &types.ReconciliationResp{
		ID: st.ID, State: st.State, Actor: st.Actor.Name, Range: st.Range.String(),
		StartedAt: st.StartedAt.Format(time.RFC3339Nano), Error: st.Error,
		Records: st.Progress.Records, RatePerSecond: st.Progress.RatePerSecond,
		Partitions: []types.ReconcilePartition{}, Counts: map[string]int64{}, Exceptions: []types.ReconcileException{},
		Missing: st.Summary.Missing(), ExceptionCount: st.Summary.Exceptions, ExceptionsTruncated: st.Truncated(),
	}
	parts := st.Progress.Partitions
	if st.State != reconcile.StateRunning {
		resp.FinishedAt = st.FinishedAt.Format(time.RFC3339Nano)
		resp.Records, parts = st.Summary.Records, st.Summary.Partitions
		for _, c := range reconcile.Classes {
			resp.Counts[string(c)] = st.Summary.Counts[c]
		}
	}
	for _, p := range parts {
		resp.Partitions = append(resp.Partitions, types.ReconcilePartition{Partition: p.Partition, From: p.From, Position: p.Position, End: p.End})
	}
	if rd := st.Redrive; rd != nil {
		s := rd.Summary
		resp.Redrive = &types.ReconcileRedrive{State: rd.State, Actor: rd.Actor.Name, StartedAt: rd.StartedAt.Format(time.RFC3339Nano),
			Error: rd.Error, Missing: s.Missing, Redriven: s.Redriven, Resolved: s.Resolved, Refused: s.Refused, Failed: s.Failed,
			NotTried: s.NotTried}
		if rd.State != reconcile.StateRunning {
			resp.Redrive.FinishedAt = rd.FinishedAt.Format(time.RFC3339Nano)
		}
	}
	for _, x := range st.Exceptions {
		resp.Exceptions = append(resp.Exceptions, types.ReconcileException{RequestID: x.RequestID, Partition: x.Partition,
			Offset: x.Offset, Class: string(x.Class), Detail: x.Detail})
	}
	return resp
}

type StartReconciliationLogic struct{ base }

func NewStartReconciliationLogic(ctx context.Context, svcCtx *svc.ServiceContext) *StartReconciliationLogic {
	return &StartReconciliationLogic{newBase(ctx, svcCtx)}
}

// StartReconciliation starts a run in the background, or refuses while one is running.
func (l *StartReconciliationLogic) StartReconciliation(req *types.ReconcileReq) (*types.ReconciliationResp, error) {
	p, err := principal(l.ctx)
	if err != nil {
		return nil, err
	}
	r := reconcile.Range{FromOffset: req.FromOffset, FromTime: types.ParseTime(req.FromTime), ToEnd: req.ToEnd}
	st, err := l.svcCtx.Reconciliations.Begin(reconcile.Actor{Name: p.Actor, Issuer: p.Issuer, Addr: p.Addr, Role: p.Role}, r)
	if err != nil {
		return nil, apiError(l.ctx, "reconciliation", err)
	}
	return reconciliationResp(st), nil
}

type LatestReconciliationLogic struct{ base }

func NewLatestReconciliationLogic(ctx context.Context, svcCtx *svc.ServiceContext) *LatestReconciliationLogic {
	return &LatestReconciliationLogic{newBase(ctx, svcCtx)}
}

// LatestReconciliation returns the latest run.
func (l *LatestReconciliationLogic) LatestReconciliation() (*types.ReconciliationResp, error) {
	st, ok := l.svcCtx.Reconciliations.Latest()
	if !ok {
		return nil, errcode.New(http.StatusNotFound, errcode.NotFound, "no reconciliation has run since dlq-worker started")
	}
	return reconciliationResp(st), nil
}

type GetReconciliationLogic struct{ base }

func NewGetReconciliationLogic(ctx context.Context, svcCtx *svc.ServiceContext) *GetReconciliationLogic {
	return &GetReconciliationLogic{newBase(ctx, svcCtx)}
}

// GetReconciliation returns run id if it is the latest.
func (l *GetReconciliationLogic) GetReconciliation(req *types.IDReq) (*types.ReconciliationResp, error) {
	st, err := l.svcCtx.Reconciliations.Get(req.ID)
	if err != nil {
		return nil, apiError(l.ctx, "reconciliation", err)
	}
	return reconciliationResp(st), nil
}
