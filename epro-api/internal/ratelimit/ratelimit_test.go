package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/epro-intake/common/embedded"
	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/epro-api/internal/config"
	"github.com/epro-intake/epro-api/internal/ratelimit"
)

func conf(t *testing.T) config.RateLimitConf {
	return config.RateLimitConf{PatientBurst: 10, PatientRate: 1, ClientBurst: 20, ClientRate: 2,
		RedisTimeout: 50 * time.Millisecond, KeyPrefix: infratest.UniqueName(t, "rl"), MaxKeys: 1000}
}

// newLimiter returns a Limiter on the Redis at addr, closed with the test.
func newLimiter(t *testing.T, c config.RateLimitConf, addr string) (*ratelimit.Limiter, error) {
	t.Helper()
	rdb := ratelimit.NewRedis(c, config.RedisConf{Addr: addr})
	l, err := ratelimit.New(c, rdb)
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	t.Cleanup(func() {
		l.Close()
		_ = rdb.Close()
	})
	return l, nil
}

func refusal(t *testing.T, err error) *errcode.Error {
	t.Helper()
	var e *errcode.Error
	if !errors.As(err, &e) || e.Status != http.StatusTooManyRequests || e.Code != errcode.RateLimited {
		t.Fatalf("err %v, want 429 RATE_LIMITED", err)
	}
	return e
}

// A request takes its tokens from all its buckets or from none: a request a patient's bucket refuses costs
// its client nothing. A refusal names the client's bucket before a patient's, and Retry-After is the refill
// time of the tokens asked for.
func TestTakeAllOrNothingAndRetryAfter(t *testing.T) {
	c := conf(t)
	// This test is about counting: a Redis answer slower than usual (a busy host, -race) must not hand the
	// decision to the in-process buckets halfway.
	c.RedisTimeout = time.Second
	l, err := newLimiter(t, c, infratest.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := l.Take(ctx, "ip:a", 10, map[string]int{"P1": 10}); err != nil {
		t.Fatal(err)
	}
	// P1 is spent: refused on the patient, and the client's bucket keeps the 3 tokens asked for.
	if _, err := l.Take(ctx, "ip:a", 3, map[string]int{"P1": 3}); err == nil {
		t.Fatal("a spent patient bucket allowed 3 more")
	} else if e := refusal(t, err); e.RetryAfter != 3 || e.Message == "" {
		t.Fatalf("patient refusal %+v, want Retry-After 3 (3 tokens at 1/s)", e)
	}
	// Client a still has its 10 (and whatever refilled): the refused request took none.
	if _, err := l.Take(ctx, "ip:a", 10, map[string]int{"P2": 10}); err != nil {
		t.Fatalf("client a after a refused request: %v", err)
	}
	// Now client a has at most a few of its 20 left: 10 more are refused on the client (Retry-After 10/2 = 5),
	// and P3, refused with it, keeps its whole bucket.
	if _, err := l.Take(ctx, "ip:a", 10, map[string]int{"P3": 10}); err == nil {
		t.Fatal("a spent client bucket allowed 10 more")
	} else if e := refusal(t, err); e.RetryAfter != 5 {
		t.Fatalf("client refusal %+v, want Retry-After 5", e)
	}
	if _, err := l.Take(ctx, "ip:b", 10, map[string]int{"P3": 10}); err != nil {
		t.Fatalf("P3 from another client: %v", err)
	}
}

// With Redis unreachable the in-process buckets keep the same rule: all of a request's tokens or none.
func TestTakeAllOrNothingInProcess(t *testing.T) {
	l, err := newLimiter(t, conf(t), closedAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if a, err := l.Take(ctx, "ip:x", 10, map[string]int{"P1": 10}, "k"); err != nil || a.Unread == nil {
		t.Fatalf("first take: %+v, %v; want allowed, keys unread", a, err)
	}
	if _, err := l.Take(ctx, "ip:x", 5, map[string]int{"P1": 5}); err == nil {
		t.Fatal("a spent patient bucket allowed 5 more")
	} else if e := refusal(t, err); e.RetryAfter != 5 {
		t.Fatalf("patient refusal %+v, want Retry-After 5", e)
	}
	// The client's 10 remaining tokens are all there: the refused request took none.
	if _, err := l.Take(ctx, "ip:x", 10, map[string]int{"P2": 10}); err != nil {
		t.Fatalf("client x after a refused request: %v", err)
	}
}

// closedAddr returns an address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// Take reads the keys it is given in the same call, "" for an absent key, whether the buckets allow the
// request or refuse it.
func TestTakeReadsKeys(t *testing.T) {
	c := conf(t)
	c.RedisTimeout = time.Second
	addr := infratest.Redis(t)
	l, err := newLimiter(t, c, addr)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	set, unset := c.KeyPrefix+":read:set", c.KeyPrefix+":read:unset"
	if err := rdb.Set(t.Context(), set, "value", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a, err := l.Take(ctx, "ip:r", 10, map[string]int{"PR": 10}, unset, set)
	if err != nil || a.Unread != nil || len(a.Values) != 2 || a.Values[0] != "" || a.Values[1] != "value" {
		t.Fatalf("allowed: %+v, %v; want values [\"\" \"value\"]", a, err)
	}
	a, err = l.Take(ctx, "ip:r", 1, map[string]int{"PR": 1}, set)
	refusal(t, err)
	if a.Unread != nil || len(a.Values) != 1 || a.Values[0] != "value" {
		t.Fatalf("refused: %+v; want the value read", a)
	}
}

func TestNewRefusesZeroValues(t *testing.T) {
	c := conf(t)
	c.RedisTimeout = 0
	if _, err := newLimiter(t, c, "127.0.0.1:1"); err == nil {
		t.Fatal("New accepted a zero RedisTimeout")
	}
	if _, err := ratelimit.New(conf(t), nil); err == nil {
		t.Fatal("New accepted no Redis client")
	}
}

// While Redis is stopped the in-process buckets decide, without waiting on Redis; once it is back, the
// buckets are in Redis again.
func TestRedisDownAndBack(t *testing.T) {
	addr, stop, err := embedded.RunRedis("")
	if err != nil {
		t.Fatal(err)
	}
	c := conf(t)
	l, err := newLimiter(t, c, addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := l.Take(ctx, "ip:a", 1, map[string]int{"P": 1}); err != nil {
		t.Fatal(err)
	}
	stop()
	start := time.Now()
	allowed := 0
	for i := range 30 {
		t0 := time.Now()
		a, err := l.Take(ctx, fmt.Sprintf("ip:%d", i), 1, map[string]int{"P": 1}, "some-key")
		if took := time.Since(t0); took > 200*time.Millisecond {
			t.Fatalf("take %d waited %s with Redis stopped", i, took)
		}
		if a.Unread == nil {
			t.Fatalf("take %d read its key with Redis stopped", i)
		}
		if err == nil {
			allowed++
		} else {
			refusal(t, err)
		}
	}
	// The in-process bucket of P starts full (10) and refills 1/s.
	if limit := 10 + int(time.Since(start)/time.Second) + 1; allowed < 10 || allowed > limit {
		t.Fatalf("%d of 30 allowed with Redis stopped, want 10 to %d", allowed, limit)
	}

	if _, stop, err = embedded.RunRedis(addr); err != nil {
		t.Fatal(err)
	}
	defer stop()
	restarted := time.Now()
	// Back in Redis: the buckets of a take are written to the restarted, empty Redis again.
	deadline := time.Now().Add(5 * time.Second)
	for i := 0; ; i++ {
		patient := fmt.Sprintf("P-BACK-%d", i)
		if _, err := l.Take(ctx, fmt.Sprintf("ip:back-%d", i), 1, map[string]int{patient: 1}); err != nil {
			t.Fatalf("after Redis came back: %v", err)
		}
		if keys(t, addr, "{"+c.KeyPrefix+":patient:*}.tokens") > 0 {
			t.Logf("back in Redis %s after the restart", time.Since(restarted))
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("buckets not back in Redis 5 s after it returned")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// keys counts the keys matching pattern.
func keys(t *testing.T, addr, pattern string) int {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	return len(c.Keys(t.Context(), pattern).Val())
}

// A Redis that accepts connections and never answers costs the first take of a fresh client at most about
// RedisTimeout, then nothing. Repeated on fresh addresses: with go-zero's client, a take on a connection its
// pool opened before the guard's hook was installed stalled 3 s in about one run of eight.
func TestSilentRedisBounded(t *testing.T) {
	for i := range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
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
		lim, err := newLimiter(t, conf(t), l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		for j := range 3 {
			start := time.Now()
			if _, err := lim.Take(context.Background(), "ip:a", 1, map[string]int{"P": 1}); err != nil {
				t.Fatalf("address %d, take %d: %v", i, j, err)
			}
			if took := time.Since(start); took > 300*time.Millisecond {
				t.Fatalf("address %d, take %d took %s against a silent Redis", i, j, took)
			}
		}
	}
}
