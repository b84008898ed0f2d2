// Package logic holds one XxxLogic per endpoint of dlq.api, built per request.
package logic

import (
	"context"

	"github.com/zeromicro/go-zero/core/logx"

	"github.com/epro-intake/dlq-worker/internal/svc"
)

// base is what every XxxLogic holds, as goctl's template lays it out.
type base struct {
	logx.Logger
	ctx    context.Context
	svcCtx *svc.ServiceContext
}

func newBase(ctx context.Context, svcCtx *svc.ServiceContext) base {
	return base{Logger: logx.WithContext(ctx), ctx: ctx, svcCtx: svcCtx}
}
