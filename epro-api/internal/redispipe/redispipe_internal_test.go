package redispipe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/epro-intake/common/infratest"
)

// pipelines records the pipelines a client sends (the commands of each), and can hold the first one until
// released, so that calls queue behind it.
type pipelines struct {
	mu    sync.Mutex
	sizes []int
	hold  chan struct{} // nil: hold nothing
	held  chan struct{} // closed when the first pipeline is held
	once  sync.Once
}

func (p *pipelines) DialHook(next redis.DialHook) redis.DialHook { return next }

func (p *pipelines) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (p *pipelines) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if connectionSetup(cmds) {
			return next(ctx, cmds)
		}
		p.mu.Lock()
		p.sizes = append(p.sizes, len(cmds))
		p.mu.Unlock()
		if p.hold != nil {
			p.once.Do(func() {
				close(p.held)
				<-p.hold
			})
		}
		return next(ctx, cmds)
	}
}

// connectionSetup tells the pipeline go-redis sends on a new connection (HELLO, CLIENT SETINFO) from ours.
func connectionSetup(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		if n := c.Name(); n == "hello" || n == "client" || n == "auth" || n == "select" {
			return true
		}
	}
	return false
}

func (p *pipelines) got() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.sizes...)
}

func newPipe(t *testing.T, maxCalls, queue int, timeout time.Duration, held bool, scripts ...string) (*Pipe, *pipelines, string) {
	t.Helper()
	addr := infratest.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	rec := &pipelines{}
	if held {
		rec.hold, rec.held = make(chan struct{}), make(chan struct{})
	}
	rdb.AddHook(rec)
	p, err := New(rdb, maxCalls, queue, timeout, scripts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if rec.hold != nil {
			select {
			case <-rec.hold:
			default:
				close(rec.hold)
			}
		}
		p.Close()
		_ = rdb.Close()
	})
	return p, rec, addr
}

// waitQueued waits until n calls wait in p's queue.
func waitQueued(t *testing.T, p *Pipe, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(p.queue) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls queued after 5 s, want %d", len(p.queue), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// Calls made while a pipeline is in flight go out together in the next one, at most maxCalls a pipeline,
// and each caller gets its own answer.
func TestCallsQueuedBehindAPipelineShareOne(t *testing.T) {
	p, rec, _ := newPipe(t, 4, 100, 5*time.Second, true)
	key := infratest.UniqueName(t, "pipe")
	ctx := context.Background()

	first := make(chan error, 1)
	go func() { first <- p.Do(ctx, 10*time.Second, redis.NewStringCmd(ctx, "echo", "first")) }()
	<-rec.held
	cmds := make([]*redis.IntCmd, 10)
	errs := make(chan error, len(cmds))
	for i := range cmds {
		cmds[i] = redis.NewIntCmd(ctx, "incrby", key, i+1)
		go func() { errs <- p.Do(ctx, 10*time.Second, cmds[i]) }()
	}
	waitQueued(t, p, len(cmds))
	close(rec.hold)

	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for range cmds {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// Each INCRBY answered the sum of itself and whatever ran before it: the answers are distinct, and the
	// last is 1+...+10.
	seen, top := map[int64]bool{}, int64(0)
	for _, c := range cmds {
		v, err := c.Result()
		if err != nil || seen[v] {
			t.Fatalf("answer %d, %v (seen %v)", v, err, seen)
		}
		seen[v], top = true, max(top, v)
	}
	if top != 55 {
		t.Fatalf("last answer %d, want 55", top)
	}
	// One pipeline for the first call, then the ten queued ones in pipelines of at most four.
	if got := fmt.Sprint(rec.got()); got != "[1 4 4 2]" {
		t.Fatalf("pipelines of %s commands, want [1 4 4 2]", got)
	}
}

// An EVALSHA of a script Redis does not hold (a restarted or flushed Redis) is sent again as EVAL, and the
// caller gets the script's answer.
func TestUnknownScriptSentAgainAsEval(t *testing.T) {
	// A source of its own, so that no earlier run loaded it into a shared Redis.
	src := fmt.Sprintf("-- %s\nreturn ARGV[1]", infratest.UniqueName(t, "script"))
	p, rec, _ := newPipe(t, 8, 8, 5*time.Second, false, src)
	ctx := context.Background()
	cmd := redis.NewCmd(ctx, "evalsha", redis.NewScript(src).Hash(), 0, "answer")
	if err := p.Do(ctx, 5*time.Second, cmd); err != nil {
		t.Fatal(err)
	}
	if v, err := cmd.Text(); err != nil || v != "answer" {
		t.Fatalf("answer %q, %v", v, err)
	}
	if got := fmt.Sprint(rec.got()); got != "[1 1]" {
		t.Fatalf("pipelines %s, want [1 1] (EVALSHA, then EVAL)", got)
	}
	// Now Redis holds it: one round trip.
	cmd = redis.NewCmd(ctx, "evalsha", redis.NewScript(src).Hash(), 0, "again")
	if err := p.Do(ctx, 5*time.Second, cmd); err != nil || cmd.Val() != "again" {
		t.Fatalf("second call: %v, %v", cmd.Val(), err)
	}
	if n := len(rec.got()); n != 3 {
		t.Fatalf("%d pipelines, want 3", n)
	}
}

// Go never blocks: with the queue full it says so at once. Close sends what was queued.
func TestGoQueueFullAndCloseFlushes(t *testing.T) {
	p, rec, addr := newPipe(t, 2, 3, 5*time.Second, true)
	prefix := infratest.UniqueName(t, "flush")
	set := func(i int) []redis.Cmder {
		return []redis.Cmder{redis.NewStatusCmd(context.Background(), "set", fmt.Sprintf("%s:%d", prefix, i), "v", "ex", 60)}
	}
	var finished sync.WaitGroup
	finished.Add(4)
	if !p.Go(set(0), finished.Done) {
		t.Fatal("first Go refused")
	}
	<-rec.held
	for i := 1; i <= 3; i++ {
		if !p.Go(set(i), finished.Done) {
			t.Fatalf("Go %d refused with room in the queue", i)
		}
	}
	start := time.Now()
	if p.Go(set(4), finished.Done) {
		t.Fatal("Go accepted a call beyond the queue")
	}
	if took := time.Since(start); took > 100*time.Millisecond {
		t.Fatalf("Go blocked %s on a full queue", took)
	}
	close(rec.hold)
	p.Close()
	finished.Wait()
	if p.Go(set(5), nil) {
		t.Fatal("Go accepted a call after Close")
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer rdb.Close()
	for i := 0; i <= 4; i++ {
		n := rdb.Exists(context.Background(), fmt.Sprintf("%s:%d", prefix, i)).Val()
		if want := int64(1); i == 4 {
			if n != 0 {
				t.Fatalf("key %d, refused by Go, was written", i)
			}
		} else if n != want {
			t.Fatalf("key %d not written by Close", i)
		}
	}
}

// Against a Redis that accepts connections and never answers, Do returns ErrSlow after its wait, and the
// next calls, queued behind the hanging pipeline, after theirs.
func TestDoBoundedBySilentRedis(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				_ = c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	rdb := redis.NewClient(&redis.Options{Addr: l.Addr().String(), MaxRetries: -1, DialTimeout: time.Second,
		ReadTimeout: time.Second, WriteTimeout: time.Second})
	t.Cleanup(func() { _ = rdb.Close() })
	p, err := New(rdb, 4, 4, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	for i := range 3 {
		start := time.Now()
		err := p.Do(context.Background(), 50*time.Millisecond, redis.NewStatusCmd(context.Background(), "ping"))
		if took := time.Since(start); !errors.Is(err, ErrSlow) || took > 300*time.Millisecond {
			t.Fatalf("call %d: %v after %s, want ErrSlow after about 50ms", i, err, took)
		}
	}
}

func TestNewRefusesZeroValues(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	for _, tc := range []struct{ calls, queue int }{{0, 1}, {1, 0}} {
		if _, err := New(rdb, tc.calls, tc.queue, time.Second); err == nil {
			t.Fatalf("New accepted maxCalls %d, queue %d", tc.calls, tc.queue)
		}
	}
	if _, err := New(rdb, 1, 1, 0); err == nil {
		t.Fatal("New accepted a zero timeout")
	}
	if _, err := New(nil, 1, 1, time.Second); err == nil {
		t.Fatal("New accepted no client")
	}
}
