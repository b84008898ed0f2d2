package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/epro-intake/e2e/internal/ledger"
	"github.com/epro-intake/e2e/internal/load"
)

// drainRun is the backlog measurement: reports accepted while epro-mq was stopped, then stored after it
// started again.
type drainRun struct {
	phase     *phaseRun
	restarted time.Time
	complete  time.Time // the poll that first saw every row
}

func (b *bench) backlogDrain(ctx context.Context, client *http.Client, postURL string, answers load.AnswerSet, total int) (*drainRun, error) {
	o := b.opt
	b.progress("drain: stopping epro-mq")
	if err := stopService(b.mq); err != nil {
		return nil, err
	}
	stoppedAt, err := ledger.Count(ctx, b.db, b.since)
	if err != nil {
		return nil, err
	}
	spec := load.Spec{Name: "backlog", Concurrency: max(o.concurrency, 64), N: o.backlog, Duration: maxPhaseDuration}
	pr := b.phase(ctx, client, postURL, answers, spec, false)
	pr.noE2E = true
	// At least every report accepted so far; more if some that were refused got stored anyway.
	want := max(total, stoppedAt) + len(pr.load.Accepted)
	if n, err := ledger.Count(ctx, b.db, b.since); err != nil || n != stoppedAt {
		return nil, fmt.Errorf("drain: rows went from %d to %d while epro-mq was stopped (%v)", stoppedAt, n, err)
	}
	b.progress("drain: starting epro-mq on a backlog of %d reports", len(pr.load.Accepted))
	restarted := time.Now()
	if err := b.startMQ(); err != nil {
		return nil, err
	}
	var profiled sync.WaitGroup
	if _, ok := b.devPorts["epro-mq"]; ok {
		// The drain is short: a few seconds from just after the restart show what bounds it.
		profiled.Go(func() {
			time.Sleep(500 * time.Millisecond)
			b.serviceProfile(ctx, "epro-mq", "epro-mq.drain.cpu.pprof", 3)
		})
	}
	before := b.cpu.sample()
	// A slow poll: COUNT(*) scans an index, and a fast one would take MariaDB time from the drain it measures.
	n, complete, err := waitRows(ctx, b.db, b.since, want, 500*time.Millisecond, 30*time.Second, o.drainTimeout)
	after := b.cpu.sample()
	profiled.Wait()
	if err != nil {
		return nil, fmt.Errorf("drain: %w%s", err, b.logHint())
	}
	b.res.DrainCPU = cpuUse(before, after)
	b.progress("drain: %d rows stored %.1fs after the restart", n, complete.Sub(restarted).Seconds())
	return &drainRun{phase: pr, restarted: restarted, complete: complete}, nil
}
