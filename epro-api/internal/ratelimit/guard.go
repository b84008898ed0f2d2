package ratelimit

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	red "github.com/redis/go-redis/v9"
)

// go-zero's TokenLimiter falls back to its in-process bucket on any Redis error except a context one, and then
// pings Redis every 100 ms until it answers. Left alone that is not enough to keep intake fast while Redis is
// down: go-zero's client (core/stores/redis) has no timeouts of its own to set (go-redis's 5 s dial, 3 s read,
// three retries), a limiter asks Redis once more for every new key, and a call cut short by a context
// deadline makes TokenLimiter refuse the request instead of falling back. The guard, a go-redis hook on the
// limiter's client, closes those gaps:
//   - every call gets RedisTimeout; when that runs out the call fails with errRedisSlow, which is not a
//     context error, so TokenLimiter falls back rather than refusing;
//   - after a failure every call but a ping fails at once with errRedisDown for downFor, so new keys fall
//     back without waiting either; one ping per probeInterval (TokenLimiter's monitors send them) goes
//     through, and the first that succeeds ends it.
const (
	downFor       = time.Second
	probeInterval = 100 * time.Millisecond
)

var (
	errRedisDown = errors.New("ratelimit: redis failed recently; the in-process buckets decide")
	errRedisSlow = errors.New("ratelimit: redis did not answer within RateLimit.RedisTimeout")
)

// go-zero keeps one go-redis client per address and installs the hooks of the first *redis.Redis made for
// it, so the guard is per address too: every Limiter on that address shares it, and its RedisTimeout is the
// first one's.
var (
	guardsMu sync.Mutex
	guards   = map[string]*guard{}
)

func guardFor(addr string, budget time.Duration) *guard {
	guardsMu.Lock()
	defer guardsMu.Unlock()
	if g, ok := guards[addr]; ok {
		return g
	}
	g := &guard{budget: budget}
	guards[addr] = g
	return g
}

type guard struct {
	budget    time.Duration
	downUntil atomic.Int64 // unix nanoseconds; Redis calls other than probes fail fast before it
	lastProbe atomic.Int64 // unix nanoseconds of the last ping let through while down
}

func (g *guard) DialHook(next red.DialHook) red.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, g.budget)
		defer cancel()
		return next(ctx, network, addr)
	}
}

func (g *guard) ProcessHook(next red.ProcessHook) red.ProcessHook {
	return func(ctx context.Context, cmd red.Cmder) error {
		now := time.Now()
		if now.UnixNano() < g.downUntil.Load() && (cmd.Name() != "ping" || !g.probeDue(now)) {
			return errRedisDown
		}
		bctx, cancel := context.WithTimeoutCause(ctx, g.budget, errRedisSlow)
		defer cancel()
		err := next(bctx, cmd)
		var serverErr red.Error
		switch {
		case err == nil || errors.Is(err, red.Nil) || errors.As(err, &serverErr):
			// Redis answered (Nil is the script's "not allowed"; a server error is an answer too).
			g.downUntil.Store(0)
			return err
		case ctx.Err() != nil:
			// The caller gave up, which says nothing about Redis.
			return err
		case errors.Is(context.Cause(bctx), errRedisSlow):
			err = errRedisSlow
		}
		g.downUntil.Store(time.Now().Add(downFor).UnixNano())
		return err
	}
}

func (g *guard) ProcessPipelineHook(next red.ProcessPipelineHook) red.ProcessPipelineHook {
	return next
}

// probeDue reports whether a ping may go to Redis now, at most one per probeInterval.
func (g *guard) probeDue(now time.Time) bool {
	last := g.lastProbe.Load()
	return now.UnixNano()-last >= int64(probeInterval) && g.lastProbe.CompareAndSwap(last, now.UnixNano())
}
