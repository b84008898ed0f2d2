// Package readiness tells whether the API can take reports right now: it pings Kafka for the report topic in
// the background, so /readyz answers from memory and a probe storm never reaches the brokers.
package readiness

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zeromicro/go-zero/core/logx"
)

// Pinger is what the checker needs from the producer.
type Pinger interface {
	Ping(ctx context.Context, topic string) error
}

// Checker pings every Interval and is ready while the last success is at most MaxAge old. It is a
// service.Service: Start blocks until Stop.
type Checker struct {
	pinger   Pinger
	topic    string
	interval time.Duration
	maxAge   time.Duration
	now      func() time.Time

	lastOK atomic.Int64 // unix nanoseconds of the last successful ping; 0: never
	failed atomic.Bool  // the last ping failed; logged once per change, not per ping

	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

// New returns a Checker that is not ready until its first ping succeeds.
func New(p Pinger, topic string, interval, maxAge time.Duration) *Checker {
	return &Checker{
		pinger: p, topic: topic, interval: interval, maxAge: maxAge, now: time.Now,
		stop: make(chan struct{}), done: make(chan struct{}),
	}
}

// Ready reports whether a ping succeeded within MaxAge.
func (c *Checker) Ready() bool {
	last := c.lastOK.Load()
	return last != 0 && c.now().Sub(time.Unix(0, last)) <= c.maxAge
}

// Start pings until Stop is called.
func (c *Checker) Start() {
	defer close(c.done)
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		c.check()
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
	}
}

// Stop makes Start return; Wait waits for that.
func (c *Checker) Stop() {
	c.stopOnce.Do(func() { close(c.stop) })
}

// Wait blocks until Start has returned.
func (c *Checker) Wait() { <-c.done }

func (c *Checker) check() {
	// A ping that takes longer than the interval is as bad as a failed one.
	ctx, cancel := context.WithTimeout(context.Background(), c.interval)
	defer cancel()
	err := c.pinger.Ping(ctx, c.topic)
	if err != nil {
		if !c.failed.Swap(true) {
			logx.Errorw("kafka not ready", logx.Field("topic", c.topic), logx.Field("error", err.Error()))
		}
		return
	}
	c.lastOK.Store(c.now().UnixNano())
	if c.failed.Swap(false) {
		logx.Infow("kafka ready again", logx.Field("topic", c.topic))
	}
}
