// Package redispipe coalesces the Redis commands of concurrent requests into pipelines: one goroutine sends
// whatever was queued while its previous pipeline was in flight, as one pipeline (one round trip, one write
// and one read syscall on one connection), so a busy API pays one round trip per pipeline rather than one per
// request. Nothing waits to fill a pipeline: an idle Pipe sends a lone call at once.
//
// A caller that waits (Do) waits at most the time it names, whatever Redis does; a caller that does not wait
// (Go) is never blocked, and is told when the queue is full. Close sends what is queued, then stops.
package redispipe

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrSlow is the failure of a Do whose commands did not come back within its wait: queued behind a pipeline
// that hangs, or sent to a Redis that does not answer.
var ErrSlow = errors.New("redispipe: redis did not answer in time")

// ErrClosed is the failure of a call made after Close.
var ErrClosed = errors.New("redispipe: closed")

// Pipe sends queued calls as pipelines, one pipeline at a time.
type Pipe struct {
	rdb      *redis.Client
	maxCalls int
	timeout  time.Duration
	scripts  map[string]string // SHA1 -> source, for EVALSHA answered NOSCRIPT

	queue chan *call
	done  chan struct{} // closed when the sender returned

	mu     sync.RWMutex
	closed bool // under mu; queue is closed with it
}

type call struct {
	cmds     []redis.Cmder
	finished func()
}

// New returns a running Pipe on rdb. Each pipeline carries at most maxCalls calls and runs for at most
// timeout; queue calls may wait while one is in flight. EVALSHA commands of the given scripts (their Lua
// source) that Redis
// answers NOSCRIPT (a restarted or flushed Redis) are sent again as EVAL in a second pipeline, within the
// same timeout.
func New(rdb *redis.Client, maxCalls, queue int, timeout time.Duration, scripts ...string) (*Pipe, error) {
	if rdb == nil || maxCalls <= 0 || queue <= 0 || timeout <= 0 {
		return nil, fmt.Errorf("redispipe: need a client, maxCalls, queue and timeout > 0 (got %d, %d, %s)", maxCalls, queue, timeout)
	}
	p := &Pipe{rdb: rdb, maxCalls: maxCalls, timeout: timeout, scripts: map[string]string{},
		queue: make(chan *call, queue), done: make(chan struct{})}
	for _, src := range scripts {
		p.scripts[redis.NewScript(src).Hash()] = src
	}
	go p.run()
	return p, nil
}

// Go queues cmds without waiting and reports whether they were queued (false when the queue is full or the
// Pipe closed). finished, if not nil, runs on the Pipe's goroutine once the commands have their answers or
// errors; it must not block.
func (p *Pipe) Go(cmds []redis.Cmder, finished func()) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return false
	}
	select {
	case p.queue <- &call{cmds: cmds, finished: finished}:
		return true
	default:
		return false
	}
}

// Do sends cmds in the next pipeline and waits for their answers for at most wait (from the call, queueing
// included) or until ctx is done. It returns nil once the commands are answered (each command then holds its
// own answer or error), ErrSlow when wait ran out, ctx's error, or ErrClosed. After an error the commands
// belong to the Pipe: the caller must not read them.
func (p *Pipe) Do(ctx context.Context, wait time.Duration, cmds ...redis.Cmder) error {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	answered := make(chan struct{})
	c := &call{cmds: cmds, finished: func() { close(answered) }}
	if err := p.enqueue(ctx, timer.C, c); err != nil {
		return err
	}
	select {
	case <-answered:
		return nil
	case <-timer.C:
		return ErrSlow
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Pipe) enqueue(ctx context.Context, expired <-chan time.Time, c *call) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	select {
	case p.queue <- c:
		return nil
	case <-expired:
		return ErrSlow
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close sends the calls already queued, each pipeline within the timeout, and returns when they are answered
// or failed. It does not close the client.
func (p *Pipe) Close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.queue)
	}
	p.mu.Unlock()
	<-p.done
}

func (p *Pipe) run() {
	defer close(p.done)
	batch := make([]*call, 0, p.maxCalls)
	for c := range p.queue {
		batch = append(batch[:0], c)
	more:
		for len(batch) < p.maxCalls {
			select {
			case c, ok := <-p.queue:
				if !ok {
					break more
				}
				batch = append(batch, c)
			default:
				break more
			}
		}
		p.send(batch)
	}
}

// send runs the calls of batch as one pipeline and tells each caller.
func (p *Pipe) send(batch []*call) {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	pipe := p.rdb.Pipeline()
	for _, c := range batch {
		for _, cmd := range c.cmds {
			_ = pipe.Process(ctx, cmd) // only queues; each command carries its own outcome after Exec
		}
	}
	// Exec's error is the first command's failure; every command holds its own.
	_, _ = pipe.Exec(ctx)
	p.evalUnknownScripts(ctx, batch)
	for _, c := range batch {
		if c.finished != nil {
			c.finished()
		}
	}
}

// evalUnknownScripts sends again, as EVAL, the EVALSHA commands of batch that Redis answered NOSCRIPT, and
// copies their outcome into the original commands.
func (p *Pipe) evalUnknownScripts(ctx context.Context, batch []*call) {
	type retry struct {
		orig *redis.Cmd
		eval *redis.Cmd
	}
	var retries []retry
	for _, c := range batch {
		for _, cmd := range c.cmds {
			orig, ok := cmd.(*redis.Cmd)
			if !ok || orig.Name() != "evalsha" || !redis.HasErrorPrefix(orig.Err(), "NOSCRIPT") {
				continue
			}
			args := orig.Args()
			src, known := p.scripts[fmt.Sprint(args[1])]
			if !known {
				continue
			}
			evalArgs := append([]any{"eval", src}, args[2:]...)
			retries = append(retries, retry{orig: orig, eval: redis.NewCmd(ctx, evalArgs...)})
		}
	}
	if len(retries) == 0 {
		return
	}
	pipe := p.rdb.Pipeline()
	for _, r := range retries {
		_ = pipe.Process(ctx, r.eval)
	}
	_, _ = pipe.Exec(ctx)
	for _, r := range retries {
		r.orig.SetVal(r.eval.Val())
		r.orig.SetErr(r.eval.Err())
	}
}
