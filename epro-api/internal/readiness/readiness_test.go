package readiness_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/epro-intake/epro-api/internal/readiness"
)

type pinger struct {
	fail  atomic.Bool
	calls atomic.Int32
	topic atomic.Value
}

func (p *pinger) Ping(ctx context.Context, topic string) error {
	p.calls.Add(1)
	p.topic.Store(topic)
	if _, ok := ctx.Deadline(); !ok {
		return errors.New("ping without deadline")
	}
	if p.fail.Load() {
		return errors.New("broker down")
	}
	return nil
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCheckerFollowsKafka(t *testing.T) {
	p := &pinger{}
	p.fail.Store(true)
	c := readiness.New(p, "epro.reports.v1", 20*time.Millisecond, 100*time.Millisecond)
	if c.Ready() {
		t.Fatal("ready before any ping")
	}
	go c.Start()
	defer func() { c.Stop(); c.Wait() }()

	waitUntil(t, "a few failed pings", func() bool { return p.calls.Load() >= 3 })
	if c.Ready() {
		t.Fatal("ready while every ping fails")
	}
	if got := p.topic.Load(); got != "epro.reports.v1" {
		t.Errorf("pinged topic %v", got)
	}

	p.fail.Store(false)
	waitUntil(t, "ready", c.Ready)

	// A failing ping does not end readiness at once: only a success older than MaxAge does.
	p.fail.Store(true)
	failedAt := time.Now()
	waitUntil(t, "not ready", func() bool { return !c.Ready() })
	if d := time.Since(failedAt); d < 50*time.Millisecond {
		t.Errorf("not ready after %s, before MaxAge", d)
	}

	p.fail.Store(false)
	waitUntil(t, "ready again", c.Ready)
}

func TestCheckerStops(t *testing.T) {
	p := &pinger{}
	c := readiness.New(p, "t", 10*time.Millisecond, time.Second)
	go c.Start()
	waitUntil(t, "first ping", func() bool { return p.calls.Load() > 0 })
	c.Stop()
	c.Stop() // twice is harmless: ServiceGroup and a deferred cleanup may both call it
	c.Wait()
	n := p.calls.Load()
	time.Sleep(50 * time.Millisecond)
	if p.calls.Load() != n {
		t.Error("pings after Stop")
	}
}
