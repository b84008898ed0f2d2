package logic

import (
	"context"
	"net/http"

	"github.com/zeromicro/go-zero/core/logx"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/dlq-worker/internal/svc"
	"github.com/epro-intake/dlq-worker/internal/types"
)

type ReadyzLogic struct{ base }

func NewReadyzLogic(ctx context.Context, svcCtx *svc.ServiceContext) *ReadyzLogic {
	return &ReadyzLogic{newBase(ctx, svcCtx)}
}

// Readyz answers ready while MySQL answers a ping within MySQL.QueryTimeout: every ops route reads it and the
// archive writes it, so without it the instance can do nothing useful and should get no traffic.
func (l *ReadyzLogic) Readyz() (*types.HealthResp, error) {
	ctx, cancel := l.queryCtx()
	defer cancel()
	if err := l.svcCtx.DB.PingContext(ctx); err != nil {
		logx.WithContext(l.ctx).Errorw("readiness: mysql ping failed", logx.Field("error", err.Error()))
		e := errcode.New(http.StatusServiceUnavailable, CodeNotReady, "mysql unreachable")
		e.RetryAfter = retryAfterSeconds
		return nil, e
	}
	return &types.HealthResp{Status: "ok"}, nil
}
