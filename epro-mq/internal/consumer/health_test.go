package consumer_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/epro-mq/internal/consumer"
)

// gated is a BatchHandler that holds every batch until open is closed, as a paused store would; activity,
// when set, is what it answers to LastActivity.
type gated struct {
	open     chan struct{}
	handled  atomic.Int64
	activity atomic.Int64 // Unix nanoseconds; 0: no activity
}

func (g *gated) HandleBatch(ctx context.Context, msgs []kafka.Message) error {
	select {
	case <-g.open:
		g.handled.Add(int64(len(msgs)))
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

type activeGated struct{ *gated }

func (g activeGated) LastActivity() time.Time {
	if ns := g.activity.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

type pauses struct {
	mu sync.Mutex
	d  []time.Duration
}

func (p *pauses) RebalancePause(d time.Duration) {
	p.mu.Lock()
	p.d = append(p.d, d)
	p.mu.Unlock()
}

func (p *pauses) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.d)
}

func lagOf(t *testing.T, c *consumer.ReportConsumer) map[int]consumer.PartitionLag {
	t.Helper()
	ls, err := c.Lag(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]consumer.PartitionLag{}
	for _, l := range ls {
		out[l.Partition] = l
	}
	return out
}

func TestLagShowsTheBacklogWhileStoringIsPausedAndDrainsToZero(t *testing.T) {
	f := newFixture(t, 2)
	g := &gated{open: make(chan struct{})}
	obs := &pauses{}
	c, err := newConsumer(f, g, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Observe(obs)
	if err := c.Member(); err == nil {
		t.Error("a consumer that has not joined its group is a member")
	}
	go c.Start()
	t.Cleanup(c.Stop)
	waitFor(t, "joined the group", 30*time.Second, func() bool { return c.Member() == nil })

	produced := time.Now()
	f.produce(t, 0, 60)
	ends := f.ends(t, 2)
	waitFor(t, "lag equal to the backlog", 30*time.Second, func() bool {
		l := lagOf(t, c)
		return len(l) == 2 && l[0].LogEnd == ends[0] && l[1].LogEnd == ends[1] &&
			l[0].LogEnd-l[0].Committed == ends[0] && l[1].LogEnd-l[1].Committed == ends[1] &&
			!l[0].OldestUnfinished.IsZero() && !l[1].OldestUnfinished.IsZero()
	})
	if ends[0]+ends[1] != 60 {
		t.Fatalf("log ends %v do not hold the 60 records", ends)
	}
	for p, l := range lagOf(t, c) {
		if l.OldestUnfinished.Before(produced.Add(-time.Second)) || l.OldestUnfinished.After(time.Now()) {
			t.Errorf("partition %d: oldest unfinished record at %s, produced at %s", p, l.OldestUnfinished, produced)
		}
	}
	if size, busy := c.Workers(); size != 4 || busy == 0 {
		t.Errorf("workers size %d busy %d while every batch is held", size, busy)
	}
	// Held work with no progress is a stall once the stall limit passes, not before.
	time.Sleep(50 * time.Millisecond)
	if err := c.Alive(time.Now(), time.Hour); err != nil {
		t.Errorf("alive within the stall limit: %v", err)
	}
	if err := c.Alive(time.Now(), 10*time.Millisecond); err == nil {
		t.Error("held records with no progress past the stall limit count as alive")
	}

	close(g.open)
	waitFor(t, "lag drained to zero", 30*time.Second, func() bool {
		l := lagOf(t, c)
		return len(l) == 2 && l[0].LogEnd == l[0].Committed && l[1].LogEnd == l[1].Committed &&
			l[0].OldestUnfinished.IsZero() && l[1].OldestUnfinished.IsZero()
	})
	if g.handled.Load() != 60 {
		t.Errorf("handled %d of 60", g.handled.Load())
	}
	if err := c.Alive(time.Now(), time.Millisecond); err != nil {
		t.Errorf("an idle consumer is not alive: %v", err)
	}
	if obs.count() != 0 {
		t.Errorf("the first generation reported %d rebalance pauses", obs.count())
	}

	// A second member: the first one's generation ends and it resumes the partition it keeps.
	c2, err := newConsumer(f, g, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	go c2.Start()
	t.Cleanup(c2.Stop)
	waitFor(t, "a rebalance pause observed", 60*time.Second, func() bool { return obs.count() >= 1 })
	if err := c.Member(); err != nil {
		t.Errorf("a member during and after a rebalance: %v", err)
	}
	obs.mu.Lock()
	if d := obs.d[0]; d <= 0 || d > 30*time.Second {
		t.Errorf("rebalance pause %s", d)
	}
	obs.mu.Unlock()
	c.Stop()
	if err := c.Member(); err == nil {
		t.Error("a stopped consumer is a member")
	}
}

// A handler that is retrying (an outage) is working, not stuck.
func TestAliveWhileTheHandlerRetries(t *testing.T) {
	f := newFixture(t, 1)
	g := activeGated{&gated{open: make(chan struct{})}}
	c, err := newConsumer(f, g, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	go c.Start()
	t.Cleanup(c.Stop)
	f.produce(t, 0, 5)
	waitFor(t, "records held", 30*time.Second, func() bool { _, busy := c.Workers(); return busy > 0 })
	time.Sleep(50 * time.Millisecond)
	if err := c.Alive(time.Now(), 20*time.Millisecond); err == nil {
		t.Fatal("held records with no activity count as alive")
	}
	g.activity.Store(time.Now().UnixNano())
	if err := c.Alive(time.Now(), 20*time.Millisecond); err != nil {
		t.Errorf("a handler that just retried is stuck: %v", err)
	}
	close(g.open)
}
