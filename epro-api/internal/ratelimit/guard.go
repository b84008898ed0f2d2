package ratelimit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	red "github.com/redis/go-redis/v9"

	"github.com/epro-intake/epro-api/internal/redispipe"
)

// The guard keeps intake fast and working while Redis is down or hangs:
//   - A request waits for its admit call at most RedisTimeout of wall-clock time, queueing behind other
//     requests' pipeline included (redispipe.Pipe.Do); the pipeline itself runs for at most RedisTimeout on a
//     client whose dial, read and write timeouts are RedisTimeout and that honours context deadlines, so a
//     silent Redis holds one connection for at most that long.
//   - Any failure other than an answer from Redis marks Redis down: until the guard's prober gets a PONG (one
//     ping per probeInterval), Take asks nothing of Redis and judges each key by its in-process bucket. So
//     only the calls already under way when Redis failed wait on it, each for at most RedisTimeout.
//
// (This replaces a go-redis hook on go-zero's client: go-zero's TokenLimiter had no timeouts to set, refused
// a request whose call ended on a context deadline instead of falling back, and asked a dead Redis again for
// every new key.)
const probeInterval = 100 * time.Millisecond

// errRedisDown is the reason Take did not read the caller's keys while the guard finds Redis down.
var errRedisDown = errors.New("ratelimit: redis is down; buckets judged in process")

// guard is one Limiter's view of its Redis: up or down, and the prober that finds it back.
type guard struct {
	budget time.Duration
	probe  func(ctx context.Context) error
	stop   chan struct{}

	down    atomic.Bool
	mu      sync.Mutex
	probing bool // a prober goroutine runs; under mu
	closed  bool // under mu
}

func newGuard(budget time.Duration, probe func(ctx context.Context) error) *guard {
	return &guard{budget: budget, probe: probe, stop: make(chan struct{})}
}

// redisUp reports whether the limiter should ask Redis.
func (g *guard) redisUp() bool { return !g.down.Load() }

// markDown records that Redis failed and starts the prober unless it runs.
func (g *guard) markDown() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.down.Store(true)
	if !g.probing && !g.closed {
		g.probing = true
		go g.probeUntilUp()
	}
}

func (g *guard) probeUntilUp() {
	tick := time.NewTicker(probeInterval)
	defer tick.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), g.budget)
		err := g.probe(ctx)
		cancel()
		if err == nil {
			g.mu.Lock()
			g.down.Store(false)
			g.probing = false
			g.mu.Unlock()
			return
		}
	}
}

func (g *guard) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed {
		g.closed = true
		close(g.stop)
	}
}

// judge classifies the outcome of one admit call, the error of Pipe.Do or else the command's own: nil when
// Redis answered the script; an answer that is an error (a server error) is returned without marking Redis
// down, as Redis is there; a caller that gave up says nothing about Redis; anything else (a network error,
// a timeout, the queue full for RedisTimeout) marks Redis down. Every non-nil result means the request is
// judged in process.
func (g *guard) judge(ctx context.Context, doErr error, cmd red.Cmder) error {
	err := doErr
	if err == nil {
		err = cmd.Err()
	}
	var serverErr red.Error
	switch {
	case err == nil:
		return nil
	case doErr == nil && errors.As(err, &serverErr):
		return err
	case ctx.Err() != nil:
		return err
	case errors.Is(err, redispipe.ErrClosed):
		return err
	}
	g.markDown()
	return err
}
