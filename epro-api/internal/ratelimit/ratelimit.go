// Package ratelimit limits how many reports a client and a patient may submit, with token buckets in Redis
// shared by every replica, and reads the caller's keys (the request ids' receipts) in the same round trip.
// Intake never depends on Redis for it: while Redis is down or slow, each key is judged by an in-process
// bucket of the same size (per replica), and no request waits on Redis longer than
// RateLimitConf.RedisTimeout (see guard).
//
// A request is limited as a whole, atomically: Take takes every token it needs from every bucket of the
// request or none, and the caller produces nothing when it refuses. (go-zero's TokenLimiter, used before,
// judged one bucket per call, so tokens taken from the client's bucket were kept when a patient's bucket then
// refused the request.) One request costs one Redis call, the admit script (admit.lua), which concurrent
// requests share pipelines for (internal/redispipe).
//
// The script names several keys, all in KEYS, as Redis Cluster requires of scripts; it assumes they live on
// one Redis, as ours do (one Redis, not a cluster: a cluster would refuse a call whose keys hash to several
// slots).
package ratelimit

import (
	"container/list"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	red "github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/epro-api/internal/config"
	"github.com/epro-intake/epro-api/internal/redispipe"
)

//go:embed admit.lua
var admitSource string

var admitScript = red.NewScript(admitSource)

const (
	// maxCallsPerPipeline bounds one pipeline: 64 calls (the bench's concurrency) of at most a batch's
	// receipt keys each keep one Redis round trip well under a millisecond of server time.
	maxCallsPerPipeline = 64
	// queuedCalls is how many calls may wait while a pipeline is in flight; a call that finds it full waits
	// for room within its RedisTimeout like any other.
	queuedCalls = 1024
	// poolSize is the limiter's connections: the pipeline's and the prober's, and room for connections a
	// timed-out call left to be closed.
	poolSize = 4
)

// Limiter holds the client and the patient buckets.
type Limiter struct {
	client  *buckets
	patient *buckets
	guard   *guard
	pipe    *redispipe.Pipe
	budget  time.Duration
	localMu sync.Mutex // serializes takeLocal
}

// NewRedis returns the client a Limiter needs for c: the Redis r names (the status cache's, whose receipts
// Take reads), with RedisTimeout for every timeout. It does not connect.
func NewRedis(c config.RateLimitConf, r config.RedisConf) *red.Client {
	return red.NewClient(&red.Options{
		Addr: r.Addr, Password: r.Password, DB: r.DB,
		// A call has RedisTimeout in all; go-redis's defaults (5 s dial, 3 s read) would hold a connection
		// to a silent Redis long after the request moved on, and it ignores context deadlines unless told.
		DialTimeout: c.RedisTimeout, ReadTimeout: c.RedisTimeout, WriteTimeout: c.RedisTimeout,
		ContextTimeoutEnabled: true,
		// No retries: a failed call is judged in process, and the prober asks again.
		MaxRetries: -1,
		PoolSize:   poolSize,
	})
}

// New returns a Limiter whose buckets live in the Redis of rdb (made by NewRedis; the caller closes it after
// the Limiter). It does not connect: the client dials on first use, and the first failure switches the
// buckets to their in-process fallback.
func New(c config.RateLimitConf, rdb *red.Client) (*Limiter, error) {
	if c.PatientRate <= 0 || c.PatientBurst <= 0 || c.ClientRate <= 0 || c.ClientBurst <= 0 ||
		c.RedisTimeout <= 0 || c.MaxKeys <= 0 || c.KeyPrefix == "" || rdb == nil {
		return nil, fmt.Errorf("ratelimit: incomplete configuration %+v (or no Redis client)", c)
	}
	pipe, err := redispipe.New(rdb, maxCallsPerPipeline, queuedCalls, c.RedisTimeout, admitSource)
	if err != nil {
		return nil, err
	}
	g := newGuard(c.RedisTimeout, func(ctx context.Context) error { return rdb.Ping(ctx).Err() })
	return &Limiter{
		client:  newBuckets(c.KeyPrefix, kindClient, c.ClientRate, c.ClientBurst, c.MaxKeys),
		patient: newBuckets(c.KeyPrefix, kindPatient, c.PatientRate, c.PatientBurst, c.MaxKeys),
		guard:   g, pipe: pipe, budget: c.RedisTimeout,
	}, nil
}

// Close stops the prober and lets the calls under way finish. It does not close the client.
func (l *Limiter) Close() {
	l.guard.close()
	l.pipe.Close()
}

// Admission is what Take read besides the buckets.
type Admission struct {
	// Values holds the value of each key Take was asked to read, in order, "" for an absent key; nil when
	// Unread is set.
	Values []string
	// Unread is why the keys were not read: Redis down, slow or failing. The buckets were then judged in
	// process.
	Unread error
}

// want is one bucket of a request and the tokens the request takes from it.
type want struct {
	of  *buckets
	key string
	n   int
}

// Take takes n tokens from the client's bucket and perPatient[p] from each patient p's bucket, all or none,
// and reads the keys named in reads, in one Redis call. When a bucket has too few tokens it takes none and
// refuses with 429 RATE_LIMITED and a Retry-After for that bucket (the client's is named first, then the
// patients' in the order of their ids); the keys are read all the same.
func (l *Limiter) Take(ctx context.Context, client string, n int, perPatient map[string]int, reads ...string) (Admission, error) {
	wants := make([]want, 0, 1+len(perPatient))
	if n > 0 {
		wants = append(wants, want{of: l.client, key: client, n: n})
	}
	patients := make([]string, 0, len(perPatient))
	for p, k := range perPatient {
		if k > 0 {
			patients = append(patients, p)
		}
	}
	sort.Strings(patients)
	for _, p := range patients {
		wants = append(wants, want{of: l.patient, key: p, n: perPatient[p]})
	}
	if len(wants) == 0 && len(reads) == 0 {
		return Admission{Values: []string{}}, nil
	}
	now := time.Now()
	var a Admission
	refusedAt := 0
	if !l.guard.redisUp() {
		a.Unread = errRedisDown
	} else {
		refusedAt, a.Values, a.Unread = l.admit(ctx, now, wants, reads)
	}
	if a.Unread != nil {
		a.Values = nil
		refusedAt = l.takeLocal(now, wants)
	}
	if refusedAt > 0 {
		return a, wants[refusedAt-1].refused()
	}
	return a, nil
}

// admit runs the admit script for wants and reads: the number of the refusing want (0: all taken) and the
// values read, or the error for which the request is judged in process.
func (l *Limiter) admit(ctx context.Context, now time.Time, wants []want, reads []string) (int, []string, error) {
	keys := make([]string, 0, 2*len(wants)+len(reads))
	args := make([]any, 0, 3+len(keys)+2+3*len(wants))
	for _, w := range wants {
		name := w.of.prefix + digest(w.key)
		// go-zero's TokenLimiter's key layout: the buckets it wrote are the ones read here.
		keys = append(keys, "{"+name+"}.tokens", "{"+name+"}.ts")
	}
	keys = append(keys, reads...)
	args = append(args, "evalsha", admitScript.Hash(), len(keys))
	for _, k := range keys {
		args = append(args, k)
	}
	args = append(args, now.Unix(), len(wants))
	for _, w := range wants {
		args = append(args, w.of.rate, w.of.burst, w.n)
	}
	cmd := red.NewCmd(ctx, args...)
	if err := l.guard.judge(ctx, l.pipe.Do(ctx, l.budget, cmd), cmd); err != nil {
		return 0, nil, err
	}
	out, err := cmd.Slice()
	if err != nil || len(out) != 1+len(reads) {
		return 0, nil, fmt.Errorf("ratelimit: unexpected admit answer (%d values, %v)", len(out), err)
	}
	refusedAt, ok := out[0].(int64)
	if !ok || refusedAt < 0 || refusedAt > int64(len(wants)) {
		return 0, nil, errors.New("ratelimit: unexpected admit answer")
	}
	values := make([]string, len(reads))
	for i, v := range out[1:] {
		s, ok := v.(string)
		if !ok {
			return 0, nil, errors.New("ratelimit: unexpected admit answer")
		}
		values[i] = s
	}
	return int(refusedAt), values, nil
}

// takeLocal is admit's bucket arithmetic on the in-process buckets: all of wants or none, returning the
// number of the refusing want (0: all taken). Every in-process take goes through here under localMu, so the
// check and the take are one step, as the script's are.
func (l *Limiter) takeLocal(now time.Time, wants []want) int {
	l.localMu.Lock()
	defer l.localMu.Unlock()
	limiters := make([]*rate.Limiter, len(wants))
	for i, w := range wants {
		limiters[i] = w.of.entry(w.key).local
		if limiters[i].TokensAt(now) < float64(w.n) {
			return i + 1
		}
	}
	for i, lim := range limiters {
		lim.AllowN(now, wants[i].n)
	}
	return 0
}

// refused is the 429 for a bucket that had fewer than the tokens wanted. Retry-After is the time the bucket
// takes to refill them from empty, so a client that waits it out finds them there unless it spent them
// meanwhile.
func (w want) refused() error {
	message := "too many reports for this patient; send them again after Retry-After seconds"
	if w.of.kind == kindClient {
		message = "too many reports from this client; send them again after Retry-After seconds"
	}
	retryAfter := (w.n + w.of.rate - 1) / w.of.rate
	return errcode.TooManyRequests(message, max(retryAfter, 1))
}

const (
	kindClient  = "client"
	kindPatient = "patient"
)

// buckets are the buckets of one kind of key: in Redis under prefix+digest(key), and per key the in-process
// bucket used while the guard finds Redis down, kept and reused; the least recently used beyond maxKeys is
// dropped (its Redis state stays, only the in-process state goes).
type buckets struct {
	kind   string
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
	local *rate.Limiter
}

// digest is the Redis name of a key: a patientId does not belong in key listings, MONITOR or the slow log
// (nor, unbounded in length, in a key).
func digest(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:16])
}

// newBuckets returns the buckets of kind, named keyPrefix:kind:digest in Redis.
func newBuckets(keyPrefix, kind string, perSecond, burst, maxKeys int) *buckets {
	return &buckets{kind: kind, prefix: keyPrefix + ":" + kind + ":", rate: perSecond, burst: burst, max: maxKeys,
		byKey: map[string]*list.Element{}, recency: list.New()}
}

func (b *buckets) entry(key string) *entry {
	b.mu.Lock()
	defer b.mu.Unlock()
	if el, ok := b.byKey[key]; ok {
		b.recency.MoveToFront(el)
		return el.Value.(*entry)
	}
	e := &entry{
		key: key,
		// The bucket admit.lua keeps in Redis: burst tokens, refilled rate per second.
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
