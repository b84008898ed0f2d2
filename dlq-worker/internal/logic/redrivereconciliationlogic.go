package logic

import (
	"context"

	"github.com/epro-intake/dlq-worker/internal/reconcile"
	"github.com/epro-intake/dlq-worker/internal/svc"
	"github.com/epro-intake/dlq-worker/internal/types"
)

type RedriveReconciliationLogic struct{ base }

func NewRedriveReconciliationLogic(ctx context.Context, svcCtx *svc.ServiceContext) *RedriveReconciliationLogic {
	return &RedriveReconciliationLogic{newBase(ctx, svcCtx)}
}

// RedriveReconciliation starts the re-drive of the latest run's missing records, for an operator.
func (l *RedriveReconciliationLogic) RedriveReconciliation(req *types.IDReq) (*types.ReconciliationResp, error) {
	p, err := principal(l.ctx)
	if err != nil {
		return nil, err
	}
	st, err := l.svcCtx.Reconciliations.Redrive(reconcile.Actor{Name: p.Actor, Issuer: p.Issuer, Addr: p.Addr, Role: p.Role}, req.ID)
	if err != nil {
		return nil, apiError(l.ctx, "reconciliation", err)
	}
	return reconciliationResp(st), nil
}
