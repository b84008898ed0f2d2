package ratelimit

import (
	"context"
	"errors"
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
// A Limiter's guard closes those gaps, through a go-redis hook (redisHook) on go-zero's client:
//   - Each of TokenLimiter's script calls runs on a copy of the command for at most RedisTimeout of
//     wall-clock time; the copy left behind holds a pooled connection until go-redis's own timeouts end it.
//     A call that runs out, or fails with a context error its caller did not cause, fails with errRedisSlow,
//     which is not a context error, so TokenLimiter falls back rather than refusing. (Cutting connection
//     deadlines in a dial hook instead missed the connections go-redis's pool opens before go-zero adds the
//     hook, and a test against a silent Redis stalled 3 s on one of them about one run in eight; and as the
//     hook is per address, the cut was the first Limiter's RedisTimeout for all.)
//   - Any failure marks Redis down: until the guard's prober gets a PONG (one ping per probeInterval, on a
//     client of its own without go-zero's breaker), Limiter asks no TokenLimiter and judges each key by its
//     in-process bucket. So only the calls already under way when Redis failed reach go-zero's client, each
//     for at most RedisTimeout (twice for a script Redis has not loaded yet: EVALSHA, then EVAL).
//   - The prober replaces TokenLimiter's own monitoring: the hook answers the monitors' pings itself, so that
//     they stop at once instead of failing through the breaker.
const probeInterval = 100 * time.Millisecond

var errRedisSlow = errors.New("ratelimit: redis did not answer within RateLimit.RedisTimeout")

// guard is one Limiter's view of its Redis: up or down, and the prober that finds it back.
type guard struct {
	budget time.Duration
	probe  *red.Client
	stop   chan struct{}

	down    atomic.Bool
	mu      sync.Mutex
	probing bool // a prober goroutine runs; under mu
	closed  bool // under mu
}

func newGuard(addr, password string, budget time.Duration) *guard {
	return &guard{budget: budget, stop: make(chan struct{}), probe: red.NewClient(&red.Options{
		Addr: addr, Password: password,
		DialTimeout: budget, ReadTimeout: budget, WriteTimeout: budget,
		// One connection and no retries: the prober asks again at its next tick.
		PoolSize: 1, MaxRetries: -1,
	})}
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

func (g *guard) close() error {
	g.mu.Lock()
	if !g.closed {
		g.closed = true
		close(g.stop)
	}
	g.mu.Unlock()
	return g.probe.Close()
}

// call runs next on clone, a copy of the caller's command, for at most the guard's budget and judges the outcome.
func (g *guard) call(ctx context.Context, next red.ProcessHook, clone red.Cmder, copyBack func()) error {
	// The command runs on a copy, so that it can be left behind when the budget runs out without racing with
	// the caller, who by then reads the original.
	bctx, cancel := context.WithTimeout(ctx, g.budget)
	// Cancelled only once the select is decided: cancelling from the goroutine made bctx.Done ready together
	// with done, and the select sometimes took a finished call for a timeout.
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- next(bctx, clone) }()
	select {
	case err := <-done:
		copyBack()
		return g.judge(ctx, err)
	case <-bctx.Done():
		// go-redis gives up on the copy by its own timeouts; until then it holds one pooled connection.
		return g.judge(ctx, errRedisSlow)
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

type guardKey struct{}

// withGuard makes ctx carry g to the hook, for the TokenLimiter call made with it.
func withGuard(ctx context.Context, g *guard) context.Context {
	return context.WithValue(ctx, guardKey{}, g)
}

// redisHook is the go-redis hook on go-zero's client. go-zero keeps one client per Redis address and
// installs the hooks of the first *redis.Redis made for it, so the hook holds no state of its own: it takes
// the guard of each call from the call's context.
type redisHook struct{}

func (redisHook) DialHook(next red.DialHook) red.DialHook { return next }

func (redisHook) ProcessHook(next red.ProcessHook) red.ProcessHook {
	return func(ctx context.Context, cmd red.Cmder) error {
		clone, copyBack := cloneCmd(cmd)
		if clone == nil {
			// A command go-redis sends on its own while opening a connection (HELLO, CLIENT), inside one of
			// ours, which bounds it.
			return next(ctx, cmd)
		}
		if cmd.Name() == "ping" {
			// A TokenLimiter monitor; the guard's prober does its job (see above).
			cmd.(*red.StatusCmd).SetVal("PONG")
			return nil
		}
		g, ok := ctx.Value(guardKey{}).(*guard)
		if !ok {
			// Not from a Limiter; nothing else uses this client.
			return next(ctx, cmd)
		}
		return g.call(ctx, next, clone, copyBack)
	}
}

func (redisHook) ProcessPipelineHook(next red.ProcessPipelineHook) red.ProcessPipelineHook {
	return next
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
