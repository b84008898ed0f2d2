package logic_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"github.com/zeromicro/go-zero/core/conf"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/status"
	"github.com/epro-intake/epro-api/internal/auth"
	"github.com/epro-intake/epro-api/internal/config"
	"github.com/epro-intake/epro-api/internal/logic"
	"github.com/epro-intake/epro-api/internal/ratelimit"
	"github.com/epro-intake/epro-api/internal/svc"
)

// roundTrips counts what go-redis clients send: each command sent alone and each pipeline is one round trip.
// The pipeline go-redis sends to set up a new connection (HELLO, CLIENT SETINFO) is left out: it is paid once
// per connection, not per report.
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !connectionSetup(cmd) {
			r.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && !connectionSetup(cmds[0]) {
			r.n.Add(1)
		}
		return next(ctx, cmds)
	}
}

func connectionSetup(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "hello", "client", "auth", "select":
		return true
	}
	return false
}

// ackingProducer acknowledges every Send at once, and calls sent first: the Redis work around a produce is
// what these tests measure, not Kafka.
type ackingProducer struct{ sent func(n int) }

func (p ackingProducer) Send(_ context.Context, msgs ...kafka.Message) error {
	p.sent(len(msgs))
	return nil
}
func (ackingProducer) Ping(context.Context, string) error { return nil }
func (ackingProducer) Close() error                       { return nil }

// redisOnly is an API whose only store is a miniredis of its own (Kafka acknowledges at once, MySQL is never
// reached while Redis answers), with every Redis round trip counted.
type redisOnly struct {
	svc   *svc.ServiceContext
	redis *miniredis.Miniredis
	trips *roundTrips
	// atSend is called by every Send with the number of messages.
	atSend atomic.Pointer[func(n int)]
}

func newRedisOnly(tb testing.TB) *redisOnly {
	tb.Helper()
	m := miniredis.RunT(tb)
	// RedisTimeout and Timeout are long so that a busy host does not hand a call to the in-process fallback,
	// which would not be counted; the buckets are large so that nothing is refused.
	yaml := fmt.Sprintf(`Name: redis-trips
Port: 1
Mode: test
Timeout: 10000
Kafka:
  Brokers: [127.0.0.1:1]
MySQL:
  DSN: "u:p@tcp(127.0.0.1:1)/epro"
Redis:
  Addr: %s
Auth:
  Secret: test-key-0123456789abcdef0123456789
RateLimit:
  RedisTimeout: 1s
  PatientBurst: 1000000
  PatientRate: 1000000
  ClientBurst: 10000000
  ClientRate: 1000000
`, m.Addr())
	var c config.Config
	if err := conf.LoadFromYamlBytes([]byte(yaml), &c); err != nil {
		tb.Fatal(err)
	}
	sc, err := svc.NewServiceContext(c)
	if err != nil {
		tb.Fatal(err)
	}
	r := &redisOnly{svc: sc, redis: m, trips: &roundTrips{}}
	_ = sc.Producer.Close()
	sc.Producer = ackingProducer{sent: func(n int) {
		if f := r.atSend.Load(); f != nil {
			(*f)(n)
		}
	}}
	sc.RateLimitRedis.AddHook(r.trips)
	sc.Redis.AddHook(r.trips)
	tb.Cleanup(func() { _ = sc.Close() })
	return r
}

// onSend makes every Send call f.
func (r *redisOnly) onSend(f func(n int)) { r.atSend.Store(&f) }

func callerCtx(patient string) context.Context {
	ctx := ratelimit.WithClient(context.Background(), "ip:192.0.2.1")
	return auth.WithPatient(ctx, auth.Patient{ID: patient, Sender: report.Sender{Issuer: "test", Subject: patient}})
}

func submission(tb testing.TB, patient string) (report.Submission, []byte) {
	tb.Helper()
	raw, err := json.Marshal(map[string]any{
		"requestId": uuid.NewString(), "patientId": patient, "trialId": "TRIAL-7",
		"questionnaireId": "eq-5d-5l", "questionnaireVersion": "2.1",
		"submittedAt": time.Now().Add(-time.Hour).UTC().Format(time.RFC3339),
		"answers":     map[string]any{"mobility": 2},
	})
	if err != nil {
		tb.Fatal(err)
	}
	sub, err := report.ParseSubmission(raw)
	if err != nil {
		tb.Fatal(err)
	}
	return sub, raw
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 5 s for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// A report costs exactly one Redis round trip (the admit script, which takes its tokens and reads its
// receipt) before it is produced; its status writes follow the 202 as one pipeline. A resend costs
// the one round trip and nothing more; a batch of ten costs one round trip before its one Send.
func TestOneRedisRoundTripBeforeProduce(t *testing.T) {
	r := newRedisOnly(t)
	ctx := callerCtx("PAT-TRIPS")
	var tripsAtSend atomic.Int64
	r.onSend(func(int) { tripsAtSend.Store(r.trips.n.Load()) })
	submit := func(sub report.Submission) string {
		t.Helper()
		resp, err := logic.NewSubmitReportLogic(ctx, r.svc).SubmitReport(sub)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Status
	}

	// The first call on a fresh Redis also loads the script (EVALSHA answered NOSCRIPT, then EVAL).
	warm, _ := submission(t, "PAT-TRIPS")
	submit(warm)
	waitUntil(t, "the warm-up's status writes", func() bool { return r.redis.Exists(status.ReceiptKey(warm.RequestID)) })

	for i := range 5 {
		sub, _ := submission(t, "PAT-TRIPS")
		trips := r.trips.n.Load()
		if s := submit(sub); s != status.Accepted {
			t.Fatalf("report %d: %s", i, s)
		}
		if got := tripsAtSend.Load() - trips; got != 1 {
			t.Fatalf("report %d: %d Redis round trips before the produce, want 1", i, got)
		}
		waitUntil(t, "the status writes", func() bool { return r.redis.Exists(status.ReceiptKey(sub.RequestID)) })
		waitUntil(t, "the status writes' round trip", func() bool { return r.trips.n.Load() == tripsAtSend.Load()+1 })
		if v, _ := r.redis.Get(status.Key(sub.RequestID)); v != status.Accepted {
			t.Fatalf("report %d: status %q", i, v)
		}

		trips = r.trips.n.Load()
		if s := submit(sub); s != logic.StatusDuplicate {
			t.Fatalf("resend %d: %s, want %s", i, s, logic.StatusDuplicate)
		}
		if got := r.trips.n.Load() - trips; got != 1 {
			t.Fatalf("resend %d: %d Redis round trips, want 1", i, got)
		}
	}

	items := make([]json.RawMessage, 10)
	for i := range items {
		_, items[i] = submission(t, "PAT-TRIPS")
	}
	trips := r.trips.n.Load()
	resp, err := logic.NewSubmitBatchLogic(ctx, r.svc).SubmitBatch(items)
	if err != nil || resp.Accepted != 10 {
		t.Fatalf("batch: %+v, %v", resp, err)
	}
	if got := tripsAtSend.Load() - trips; got != 1 {
		t.Fatalf("batch of 10: %d Redis round trips before the produce, want 1", got)
	}
}

// BenchmarkSubmitReportRedis submits reports from 64 goroutines (one patient each), as make bench's clients
// do, and reports the Redis round trips per report (the admit calls of concurrent requests share pipelines,
// and so do their status writes) and the commands Redis executed per report (miniredis counts those a script
// runs too).
func BenchmarkSubmitReportRedis(b *testing.B) {
	r := newRedisOnly(b)
	var sent atomic.Int64
	r.onSend(func(n int) { sent.Add(int64(n)) })
	var patients atomic.Int64
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	trips, cmds := r.trips.n.Load(), r.redis.CommandCount()
	b.RunParallel(func(pb *testing.PB) {
		patient := fmt.Sprintf("PAT-BENCH-%d", patients.Add(1))
		ctx := callerCtx(patient)
		for pb.Next() {
			sub, _ := submission(b, patient)
			if _, err := logic.NewSubmitReportLogic(ctx, r.svc).SubmitReport(sub); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	// The status writes of the last reports may still be queued: Close sends them.
	r.svc.StatusWrites.Close()
	n := float64(sent.Load())
	b.ReportMetric(float64(r.trips.n.Load()-trips)/n, "redis-round-trips/report")
	b.ReportMetric(float64(r.redis.CommandCount()-cmds)/n, "redis-cmds/report")
}
