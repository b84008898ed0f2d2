package svc

import (
	"time"

	"github.com/zeromicro/go-zero/core/logx"
)

// ProgressLog logs the consumer's counters at an interval. It is a go-zero service.Service.
type ProgressLog struct {
	svc      *ServiceContext
	interval time.Duration
	done     chan struct{}
}

// NewProgressLog returns a ProgressLog for s.
func NewProgressLog(s *ServiceContext, interval time.Duration) *ProgressLog {
	return &ProgressLog{svc: s, interval: interval, done: make(chan struct{})}
}

// Start logs until Stop.
func (p *ProgressLog) Start() {
	if p.interval <= 0 {
		<-p.done
		return
	}
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
			in, cs := p.svc.Ingester.Stats(), p.svc.Consumer.Stats()
			logx.Infow("progress",
				logx.Field("stored", in.Stored), logx.Field("skippedByRedis", in.SkippedByRedis),
				logx.Field("duplicates", in.Duplicates), logx.Field("staleMarkers", in.StaleMarkers),
				logx.Field("deadLettered", in.DeadLettered), logx.Field("transientRetries", in.TransientRetries),
				logx.Field("permanentRetryRounds", in.PermanentRetryRounds), logx.Field("partitions", cs.Assigned),
				logx.Field("generations", cs.Generations), logx.Field("commits", cs.Commits),
				logx.Field("commitErrors", cs.CommitErrs))
		}
	}
}

// Stop ends Start.
func (p *ProgressLog) Stop() { close(p.done) }
