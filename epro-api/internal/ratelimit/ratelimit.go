// Package ratelimit limits how many reports a client and a patient may submit, with go-zero's Redis-backed
// token buckets (core/limit.TokenLimiter), shared by every replica. Intake never depends on Redis for it:
// while Redis is down or slow, each key is judged by an in-process bucket of the same size (per replica), and
// no request waits on Redis for much longer than RateLimitConf.RedisTimeout (see guard).
//
// A request is limited as a whole: Take takes every token it needs or refuses, and the caller produces
// nothing when it refuses.
package ratelimit

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/zeromicro/go-zero/core/limit"
	"github.com/zeromicro/go-zero/core/stores/redis"
	"golang.org/x/time/rate"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/epro-api/internal/config"
)

// Limiter holds the client and the patient buckets.
type Limiter struct {
	client  *buckets
	patient *buckets
	guard   *guard
}

// New returns a Limiter whose buckets live in the Redis at addr. It does not connect: go-zero's client dials
// on first use, and the first failure switches the buckets to their in-process fallback.
func New(c config.RateLimitConf, addr, password string) (*Limiter, error) {
	if c.PatientRate <= 0 || c.PatientBurst <= 0 || c.ClientRate <= 0 || c.ClientBurst <= 0 ||
		c.RedisTimeout <= 0 || c.MaxKeys <= 0 || c.KeyPrefix == "" || addr == "" {
		return nil, fmt.Errorf("ratelimit: incomplete configuration %+v (Redis address %q)", c, addr)
	}
	g := newGuard(addr, password, c.RedisTimeout)
	opts := []redis.Option{redis.WithHook(redisHook{})}
	if password != "" {
		opts = append(opts, redis.WithPass(password))
	}
	store := redis.New(addr, opts...)
	return &Limiter{
		client:  newBuckets(store, g, c.KeyPrefix+":client:", c.ClientRate, c.ClientBurst, c.MaxKeys),
		patient: newBuckets(store, g, c.KeyPrefix+":patient:", c.PatientRate, c.PatientBurst, c.MaxKeys),
		guard:   g,
	}, nil
}

// Close stops the guard's prober and closes its client. go-zero's client is shared per address and stays.
func (l *Limiter) Close() error { return l.guard.close() }

// Take takes n tokens from the client's bucket, then perPatient[p] from each patient p's bucket (in the order
// of their ids), and refuses with 429 RATE_LIMITED and a Retry-After as soon as one bucket has too few. Tokens
// already taken for the request are not given back (TokenLimiter cannot): the client's bucket is asked first
// so that a client over its limit costs no patient anything.
func (l *Limiter) Take(ctx context.Context, client string, n int, perPatient map[string]int) error {
	if n <= 0 {
		return nil
	}
	if !l.client.take(ctx, client, n) {
		return refused(l.client, n, "too many reports from this client; send them again after Retry-After seconds")
	}
	patients := make([]string, 0, len(perPatient))
	for p := range perPatient {
		patients = append(patients, p)
	}
	sort.Strings(patients)
	for _, p := range patients {
		if !l.patient.take(ctx, p, perPatient[p]) {
			return refused(l.patient, perPatient[p], "too many reports for this patient; send them again after Retry-After seconds")
		}
	}
	return nil
}

// refused is the 429 for a bucket that had fewer than n tokens. Retry-After is the time the bucket takes to
// refill n tokens from empty, so a client that waits it out finds them there unless it spent them meanwhile.
func refused(b *buckets, n int, message string) error {
	retryAfter := (n + b.rate - 1) / b.rate
	return errcode.TooManyRequests(message, max(retryAfter, 1))
}

// buckets are the buckets of one kind of key: per key a TokenLimiter (in Redis) and the in-process bucket
// used while the guard finds Redis down. A TokenLimiter is per key and keeps its own fallback state in
// memory, so each key's pair is kept and reused; the least recently used beyond maxKeys is dropped (its
// Redis state stays, only the in-process state goes).
type buckets struct {
	store  *redis.Redis
	guard  *guard
	prefix string
	rate   int
	burst  int

	mu      sync.Mutex
	max     int
	byKey   map[string]*list.Element
	recency *list.List // of *entry, most recently used first
}

type entry struct {
	key   string
	redis *limit.TokenLimiter
	local *rate.Limiter
}

// digest is the Redis name of a key: go-zero's client logs the arguments of a slow command, and a patientId
// does not belong in a log (nor, unbounded in length, in a key).
func digest(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:16])
}

func newBuckets(store *redis.Redis, g *guard, prefix string, perSecond, burst, maxKeys int) *buckets {
	return &buckets{store: store, guard: g, prefix: prefix, rate: perSecond, burst: burst, max: maxKeys,
		byKey: map[string]*list.Element{}, recency: list.New()}
}

func (b *buckets) take(ctx context.Context, key string, n int) bool {
	e := b.entry(key)
	now := time.Now()
	if !b.guard.redisUp() {
		return e.local.AllowN(now, n)
	}
	return e.redis.AllowNCtx(withGuard(ctx, b.guard), now, n)
}

func (b *buckets) entry(key string) *entry {
	b.mu.Lock()
	defer b.mu.Unlock()
	if el, ok := b.byKey[key]; ok {
		b.recency.MoveToFront(el)
		return el.Value.(*entry)
	}
	e := &entry{
		key:   key,
		redis: limit.NewTokenLimiter(b.rate, b.burst, b.store, b.prefix+digest(key)),
		// The same bucket as TokenLimiter's own fallback.
		local: rate.NewLimiter(rate.Every(time.Second/time.Duration(b.rate)), b.burst),
	}
	b.byKey[key] = b.recency.PushFront(e)
	if b.recency.Len() > b.max {
		oldest := b.recency.Back()
		b.recency.Remove(oldest)
		delete(b.byKey, oldest.Value.(*entry).key)
	}
	return e
}
