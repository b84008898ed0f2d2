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

func refusal(t *testing.T, err error) *errcode.Error {
	t.Helper()
	var e *errcode.Error
	if !errors.As(err, &e) || e.Status != http.StatusTooManyRequests || e.Code != errcode.RateLimited {
		t.Fatalf("err %v, want 429 RATE_LIMITED", err)
	}
	return e
}

// The client's bucket is asked first, so a client over its limit spends no patient's tokens; Retry-After is
// the refill time of the tokens asked for.
func TestTakeOrderAndRetryAfter(t *testing.T) {
	c := conf(t)
	// This test is about counting: a Redis answer slower than usual (a busy host, -race) must not hand the
	// decision to the in-process buckets halfway.
	c.RedisTimeout = time.Second
	l, err := ratelimit.New(c, infratest.Redis(t), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	ctx := context.Background()
	if err := l.Take(ctx, "ip:a", 10, map[string]int{"P1": 10}); err != nil {
		t.Fatal(err)
	}
	// P1 is spent: refused on the patient, after the client's 10 tokens were taken.
	if e := refusal(t, l.Take(ctx, "ip:a", 3, map[string]int{"P1": 3})); e.RetryAfter != 3 || e.Message == "" {
		t.Fatalf("patient refusal %+v, want Retry-After 3 (3 tokens at 1/s)", e)
	}
	// Client a has at most a few of its 20 left: 10 more are refused on the client (Retry-After 10/2 = 5),
	// and P2, which was never asked, keeps its whole bucket.
	if e := refusal(t, l.Take(ctx, "ip:a", 10, map[string]int{"P2": 10})); e.RetryAfter != 5 {
		t.Fatalf("client refusal %+v, want Retry-After 5", e)
	}
	if err := l.Take(ctx, "ip:b", 10, map[string]int{"P2": 10}); err != nil {
		t.Fatalf("P2 from another client: %v", err)
	}
}

func TestNewRefusesZeroValues(t *testing.T) {
	c := conf(t)
	c.RedisTimeout = 0
	if _, err := ratelimit.New(c, "127.0.0.1:1", ""); err == nil {
		t.Fatal("New accepted a zero RedisTimeout")
	}
	if _, err := ratelimit.New(conf(t), "", ""); err == nil {
		t.Fatal("New accepted no Redis address")
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
	l, err := ratelimit.New(c, addr, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	ctx := context.Background()
	if err := l.Take(ctx, "ip:a", 1, map[string]int{"P": 1}); err != nil {
		t.Fatal(err)
	}
	stop()
	start := time.Now()
	allowed := 0
	for i := range 30 {
		t0 := time.Now()
		err := l.Take(ctx, fmt.Sprintf("ip:%d", i), 1, map[string]int{"P": 1})
		if took := time.Since(t0); took > 200*time.Millisecond {
			t.Fatalf("take %d waited %s with Redis stopped", i, took)
		}
		if err == nil {
			allowed++
		} else {
			refusal(t, err)
		}
	}
	// The in-process bucket of P starts full (10) and refills 1/s; the first call after the stop may still
	// have been judged by TokenLimiter's own fallback, another full bucket.
	if limit := 2*10 + int(time.Since(start)/time.Second) + 1; allowed < 10 || allowed > limit {
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
		if err := l.Take(ctx, fmt.Sprintf("ip:back-%d", i), 1, map[string]int{patient: 1}); err != nil {
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
// RedisTimeout, then nothing. Repeated on fresh addresses because go-redis's pool opens some connections
// before go-zero installs the guard's hook, and a take on one of those stalled 3 s in about one run of eight.
func TestSilentRedisBounded(t *testing.T) {
	for i := range 20 {
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
		lim, err := ratelimit.New(conf(t), l.Addr().String(), "")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = lim.Close() })
		for j := range 3 {
			start := time.Now()
			if err := lim.Take(context.Background(), "ip:a", 1, map[string]int{"P": 1}); err != nil {
				t.Fatalf("address %d, take %d: %v", i, j, err)
			}
			if took := time.Since(start); took > 300*time.Millisecond {
				t.Fatalf("address %d, take %d took %s against a silent Redis", i, j, took)
			}
		}
	}
}
