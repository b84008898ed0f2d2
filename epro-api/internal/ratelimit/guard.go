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
// pings Redis every 100 ms until it answers. Left alone that does not keep intake fast and working while Redis
// is down or hangs:
//   - go-zero's client (core/stores/redis) has no timeouts to set (go-redis's 5 s dial, 3 s read, three
//     retries), and go-redis ignores context deadlines on reads and writes (ContextTimeoutEnabled is off and
//     go-zero does not set it). A request against a Redis that accepted connections and never answered took
//     3 s, and go-zero's Timeout answered 503 first.
//   - A call cut short by a context deadline makes TokenLimiter refuse the request instead of falling back.
//   - Every key has its own TokenLimiter, so every new key asks the dead Redis once more.
//   - go-zero's client runs every command through a circuit breaker; the failed pings of TokenLimiter's
//     monitors open it, and an open breaker logs through go-zero's errorWindow.String, which reads its count
//     without the lock (a data race, go-zero v1.9.2).
//
// The guard closes those gaps. As a go-redis hook on the limiter's client it runs each of TokenLimiter's
// commands (on a copy) for at most RedisTimeout of wall-clock time; a call that runs out, or fails with a
// context error its caller did not cause, fails with errRedisSlow, which is not a context error, so
// TokenLimiter falls back rather than refusing. It also gives dials RedisTimeout and cuts every read or write
// deadline go-redis sets on the connections it dials to RedisTimeout from now (budgetConn), so a command left
// behind frees its connection soon; connections go-redis's pool opened before go-zero added the hook (it
// dials MinIdleConns at once) escape that, which is why the wall-clock bound is needed: a test against a
// silent Redis stalled 3 s on one of them about one run in eight. Any failure marks Redis down: until the
// guard's own prober gets a PONG (one ping per probeInterval, on a client of its own without go-zero's
// breaker), Limiter asks no TokenLimiter and judges each key by its in-process bucket, and the hook answers
// TokenLimiter's monitor pings itself, so that the monitors stop instead of failing through the breaker. Only
// the calls already under way when Redis failed reach go-zero's client, each for at most RedisTimeout (twice
// for a script Redis has not loaded yet: EVALSHA, then EVAL).
const probeInterval = 100 * time.Millisecond

var errRedisSlow = errors.New("ratelimit: redis did not answer within RateLimit.RedisTimeout")

// go-zero keeps one go-redis client per address and installs the hooks of the first *redis.Redis made for
// it, so the guard is per address too: every Limiter on that address shares it, and its RedisTimeout and
// password are the first one's.
var (
	guardsMu sync.Mutex
	guards   = map[string]*guard{}
)

func guardFor(addr, password string, budget time.Duration) *guard {
	guardsMu.Lock()
	defer guardsMu.Unlock()
	if g, ok := guards[addr]; ok {
		return g
	}
	g := &guard{budget: budget, probe: red.NewClient(&red.Options{
		Addr: addr, Password: password,
		DialTimeout: budget, ReadTimeout: budget, WriteTimeout: budget,
		// One connection and no retries: the prober asks again at its next tick.
		PoolSize: 1, MaxRetries: -1,
	})}
	guards[addr] = g
	return g
}

type guard struct {
	budget time.Duration
	probe  *red.Client

	down    atomic.Bool
	mu      sync.Mutex
	probing bool // a prober goroutine runs; under mu
}

// redisUp reports whether the limiter should ask Redis.
func (g *guard) redisUp() bool { return !g.down.Load() }

// markDown records that Redis failed and starts the prober unless it runs.
func (g *guard) markDown() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.down.Store(true)
	if !g.probing {
		g.probing = true
		go g.probeUntilUp()
	}
}

func (g *guard) probeUntilUp() {
	tick := time.NewTicker(probeInterval)
	defer tick.Stop()
	for range tick.C {
		ctx, cancel := context.WithTimeout(context.Background(), g.budget)
		err := g.probe.Ping(ctx).Err()
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

func (g *guard) DialHook(next red.DialHook) red.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, g.budget)
		defer cancel()
		conn, err := next(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return budgetConn{Conn: conn, budget: g.budget}, nil
	}
}

func (g *guard) ProcessHook(next red.ProcessHook) red.ProcessHook {
	return func(ctx context.Context, cmd red.Cmder) error {
		clone, copyBack := cloneCmd(cmd)
		if clone == nil {
			// A command go-redis sends on its own while opening a connection (HELLO, CLIENT), inside one of
			// ours, which bounds it.
			return next(ctx, cmd)
		}
		if cmd.Name() == "ping" && !g.redisUp() {
			// A TokenLimiter monitor: Limiter does not use TokenLimiters while the guard's prober finds Redis
			// down, so the monitor may stop; see the type's comment.
			cmd.(*red.StatusCmd).SetVal("PONG")
			return nil
		}
		// The command runs on a copy, so that it can be left behind when the budget runs out without racing
		// with the caller, who by then reads the original.
		bctx, cancel := context.WithTimeout(ctx, g.budget)
		done := make(chan error, 1)
		go func() {
			defer cancel()
			done <- next(bctx, clone)
		}()
		select {
		case err := <-done:
			copyBack()
			return g.judge(ctx, err)
		case <-bctx.Done():
			// go-redis gives up on the copy by its own timeouts; until then it holds one pooled connection.
			return g.judge(ctx, errRedisSlow)
		}
	}
}

// judge classifies the outcome of one call: an answer from Redis, or a failure the caller caused, is returned
// as it is; any other failure marks Redis down and is returned as an error TokenLimiter falls back on.
func (g *guard) judge(ctx context.Context, err error) error {
	var serverErr red.Error
	switch {
	case err == nil || errors.As(err, &serverErr):
		// Redis answered (red.Nil, the script's "not allowed", and server errors are answers too).
		return err
	case ctx.Err() != nil:
		// The caller gave up, which says nothing about Redis.
		return err
	}
	g.markDown()
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		// Ours or go-redis's (a net timeout is DeadlineExceeded to errors.Is), not the caller's: TokenLimiter
		// would take it for the caller's and refuse the request.
		return errRedisSlow
	}
	return err
}

// cloneCmd returns a copy of cmd to run and a function that copies its outcome back, for the commands the
// limiter sends: EVALSHA and EVAL (TokenLimiter's script, a *red.Cmd) and PING (its monitor, a
// *red.StatusCmd). Any other command gets nil.
func cloneCmd(cmd red.Cmder) (red.Cmder, func()) {
	switch c := cmd.(type) {
	case *red.Cmd:
		if n := c.Name(); n == "evalsha" || n == "eval" {
			cl := red.NewCmd(context.Background(), c.Args()...)
			return cl, func() { c.SetVal(cl.Val()); c.SetErr(cl.Err()) }
		}
	case *red.StatusCmd:
		if c.Name() == "ping" {
			cl := red.NewStatusCmd(context.Background(), c.Args()...)
			return cl, func() { c.SetVal(cl.Val()); c.SetErr(cl.Err()) }
		}
	}
	return nil, nil
}

func (g *guard) ProcessPipelineHook(next red.ProcessPipelineHook) red.ProcessPipelineHook {
	return next
}

// budgetConn cuts every deadline set on it to budget from now, so no read or write waits longer, whatever
// go-redis's own timeouts are. go-redis sets a deadline before each command's write and read.
type budgetConn struct {
	net.Conn
	budget time.Duration
}

func (c budgetConn) cut(t time.Time) time.Time {
	if limit := time.Now().Add(c.budget); t.IsZero() || t.After(limit) {
		return limit
	}
	return t
}

func (c budgetConn) SetDeadline(t time.Time) error      { return c.Conn.SetDeadline(c.cut(t)) }
func (c budgetConn) SetReadDeadline(t time.Time) error  { return c.Conn.SetReadDeadline(c.cut(t)) }
func (c budgetConn) SetWriteDeadline(t time.Time) error { return c.Conn.SetWriteDeadline(c.cut(t)) }
