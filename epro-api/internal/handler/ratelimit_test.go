package handler_test

import (
	"github.com/google/uuid"

	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/epro-intake/common/embedded"
	"github.com/epro-intake/common/errcode"
)

// batchOf returns a batch body of n valid reports for patient (or a fresh patient per report when patient is
// empty).
func batchOf(t *testing.T, n int, patient string) []byte {
	t.Helper()
	if patient == "" { // a batch is one patient's (its token's): a patient of its own
		patient = "PAT-MANY-" + uuid.NewString()[:8]
	}
	items := make([]any, n)
	for i := range items {
		items[i] = validReport(patient)
	}
	return mustJSON(t, map[string]any{"reports": items})
}

func batchAccepted(t *testing.T, resp response) int {
	t.Helper()
	if resp.status != http.StatusOK {
		t.Fatalf("batch: status %d, body %s", resp.status, resp.body)
	}
	var br struct {
		Accepted int `json:"accepted"`
		Rejected int `json:"rejected"`
	}
	if err := json.Unmarshal(resp.body, &br); err != nil {
		t.Fatal(err)
	}
	return br.Accepted
}

// countingYAML gives the limiter's Redis calls a long budget: the tests that use it are about counting, and a
// Redis answer slower than RedisTimeout (a busy host, -race) would hand the decision to the in-process
// buckets halfway through. Timeout makes room for it (Validate).
const countingYAML = "Timeout: 10000\n"

// expect429 checks a RATE_LIMITED answer with the given Retry-After.
func expect429(t *testing.T, resp response, retryAfter string) {
	t.Helper()
	if resp.status != http.StatusTooManyRequests {
		t.Fatalf("status %d, want 429; body %s", resp.status, resp.body)
	}
	if e := resp.errorBody(t); e.Code != errcode.RateLimited {
		t.Fatalf("code %q, want %s", e.Code, errcode.RateLimited)
	}
	if got := resp.header.Get("Retry-After"); got != retryAfter {
		t.Fatalf("Retry-After %q, want %q", got, retryAfter)
	}
}

// A patient over its limit gets 429 RATE_LIMITED with Retry-After, and nothing of the refused request is
// produced; other patients are not affected.
func TestPatientRateLimitRefusesWithRetryAfterAndProducesNothing(t *testing.T) {
	// A bucket of 100 (the smallest a 100-report batch allows) that refills one token a second.
	a := newAPI(t, apiOptions{extraYAML: countingYAML, rateLimitYAML: "  PatientBurst: 100\n  PatientRate: 1\n  RedisTimeout: 1s\n"})

	// A week offline sent as one batch fits the bucket.
	if n := batchAccepted(t, a.post("/v1/reports/batch", "application/json", batchOf(t, 100, "PAT-RL"))); n != 100 {
		t.Fatalf("first batch: %d accepted, want 100", n)
	}
	// The batch took 100 tokens, not one: a second batch of 50 is refused as a whole. At most a few tokens
	// came back in the meantime (one a second).
	before := a.recordCount()
	expect429(t, a.post("/v1/reports/batch", "application/json", batchOf(t, 50, "PAT-RL")), "50")
	if after := a.recordCount(); after != before || before != 100 {
		t.Fatalf("records %d before the refused batch, %d after; want 100 and 100", before, after)
	}

	// Single reports: the tokens that refilled are taken, then the next single is refused with Retry-After 1.
	start := time.Now()
	accepted := 0
	var refused response
	for range 10 {
		resp := a.post("/v1/reports", "application/json", mustJSON(t, validReport("PAT-RL")))
		if resp.status == http.StatusAccepted {
			accepted++
			continue
		}
		refused = resp
		break
	}
	if refused.status == 0 {
		t.Fatalf("10 single reports after a spent bucket were all accepted")
	}
	expect429(t, refused, "1")
	// One token a second, counted in whole seconds by the script: at most elapsed+2 came back.
	if limit := int(time.Since(start)/time.Second) + 2; accepted > limit {
		t.Fatalf("%d singles accepted before the 429, want at most %d", accepted, limit)
	}
	if n := a.recordCount(); n != int64(100+accepted) {
		t.Fatalf("%d records, want %d (nothing of a refused request produced)", n, 100+accepted)
	}

	// Another patient has its own bucket.
	if resp := a.post("/v1/reports", "application/json", mustJSON(t, validReport("PAT-OTHER"))); resp.status != http.StatusAccepted {
		t.Fatalf("another patient: status %d, body %s", resp.status, resp.body)
	}
	// A rejected item takes no token: after a batch of 100 with one invalid item, a fresh patient's bucket
	// still has the token for one more report.
	items := make([]any, 100)
	for i := range items {
		items[i] = validReport("PAT-MIX")
	}
	items[0].(map[string]any)["answers"] = "not an object"
	if n := batchAccepted(t, a.post("/v1/reports/batch", "application/json", mustJSON(t, map[string]any{"reports": items}))); n != 99 {
		t.Fatalf("mixed batch: %d accepted, want 99", n)
	}
	if resp := a.post("/v1/reports", "application/json", mustJSON(t, validReport("PAT-MIX"))); resp.status != http.StatusAccepted {
		t.Fatalf("the token the rejected item did not take: status %d, body %s", resp.status, resp.body)
	}
}

// The client limit counts every report of every patient from one address; X-Forwarded-For is ignored unless
// ForwardedForHops says a proxy writes it.
func TestClientRateLimit(t *testing.T) {
	a := newAPI(t, apiOptions{extraYAML: countingYAML, rateLimitYAML: "  ClientBurst: 100\n  ClientRate: 1\n  RedisTimeout: 1s\n"})

	// 100 reports from one address spend the client's bucket (the patient's holds 500).
	if n := batchAccepted(t, a.post("/v1/reports/batch", "application/json", batchOf(t, 100, ""))); n != 100 {
		t.Fatalf("batch: %d accepted, want 100", n)
	}
	before := a.recordCount()
	expect429(t, a.post("/v1/reports/batch", "application/json", batchOf(t, 50, "")), "50")

	// A client cannot pick another bucket by writing X-Forwarded-For.
	start := time.Now()
	accepted := 0
	var refused response
	for range 10 {
		req, err := http.NewRequest(http.MethodPost, a.url+"/v1/reports", strings.NewReader(string(mustJSON(t, validReport("PAT-FRESH")))))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Forwarded-For", fmt.Sprintf("203.0.113.%d", accepted+1))
		resp := a.do(a.authorize(req, "PAT-FRESH"))
		if resp.status == http.StatusAccepted {
			accepted++
			continue
		}
		refused = resp
		break
	}
	if refused.status == 0 {
		t.Fatalf("10 reports with made-up X-Forwarded-For all accepted after the client's bucket was spent")
	}
	expect429(t, refused, "1")
	if limit := int(time.Since(start)/time.Second) + 2; accepted > limit {
		t.Fatalf("%d accepted before the 429, want at most %d", accepted, limit)
	}
	if n := a.recordCount(); n != before+int64(accepted) {
		t.Fatalf("%d records, want %d", n, before+int64(accepted))
	}
}

// Behind one proxy (ForwardedForHops: 1) the client is the address the proxy appended, so two clients behind
// the same proxy have their own buckets.
func TestClientRateLimitBehindProxy(t *testing.T) {
	a := newAPI(t, apiOptions{extraYAML: countingYAML, rateLimitYAML: "  ClientBurst: 100\n  ClientRate: 1\n  ForwardedForHops: 1\n  RedisTimeout: 1s\n"})
	post := func(xff string, body []byte, path string) response {
		req, err := http.NewRequest(http.MethodPost, a.url+path, strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Forwarded-For", xff)
		return a.do(a.authorize(req, patientOf(body)))
	}
	// The client wrote "198.51.100.7" itself; the proxy appended 203.0.113.1, which is what counts.
	if n := batchAccepted(t, post("198.51.100.7, 203.0.113.1", batchOf(t, 100, ""), "/v1/reports/batch")); n != 100 {
		t.Fatalf("batch: %d accepted", n)
	}
	expect429(t, post("198.51.100.8, 203.0.113.1", batchOf(t, 50, ""), "/v1/reports/batch"), "50")
	if resp := post("203.0.113.2", mustJSON(t, validReport("PAT-PROXY")), "/v1/reports"); resp.status != http.StatusAccepted {
		t.Fatalf("another client behind the proxy: status %d, body %s", resp.status, resp.body)
	}
}

// timedPost sends one report and returns its status and duration.
func timedPost(t *testing.T, a *api, patient string) (response, time.Duration) {
	t.Helper()
	start := time.Now()
	resp := a.post("/v1/reports", "application/json", mustJSON(t, validReport(patient)))
	return resp, time.Since(start)
}

// maxRedisDownLatency bounds one submission while the limiter's Redis is down or hangs. Without the guard a
// hanging Redis held each request for go-redis's 3 s read timeout and go-zero's Timeout answered 503 first.
const maxRedisDownLatency = 500 * time.Millisecond

// With the limiter's Redis unreachable (a closed port) or hanging (a listener that never answers), intake
// still answers 202 without waiting on Redis, and the in-process buckets still limit.
func TestIntakeWithoutRedis(t *testing.T) {
	for name, addr := range map[string]string{"closed port": closedAddr(t), "no answer": silentAddr(t)} {
		t.Run(name, func(t *testing.T) {
			a := newAPI(t, apiOptions{redisAddr: addr, extraYAML: "Limits:\n  BatchItems: 5\n",
				rateLimitYAML: "  PatientBurst: 5\n  PatientRate: 1\n"})
			var slowest time.Duration
			for i := range 20 {
				resp, took := timedPost(t, a, fmt.Sprintf("PAT-NOREDIS-%d", i))
				if resp.status != http.StatusAccepted {
					t.Fatalf("report %d: status %d, body %s", i, resp.status, resp.body)
				}
				slowest = max(slowest, took)
			}
			t.Logf("slowest of 20 with Redis %s: %s", name, slowest)
			if slowest > maxRedisDownLatency {
				t.Fatalf("a submission took %s with Redis down, want at most %s", slowest, maxRedisDownLatency)
			}
			// The fallback still limits one patient: 5 at once, then one a second.
			start := time.Now()
			accepted := 0
			for range 20 {
				resp, _ := timedPost(t, a, "PAT-NOREDIS-LIMITED")
				if resp.status == http.StatusTooManyRequests {
					expect429(t, resp, "1")
					break
				}
				if resp.status != http.StatusAccepted {
					t.Fatalf("status %d, body %s", resp.status, resp.body)
				}
				accepted++
			}
			if limit := 5 + int(time.Since(start)/time.Second) + 1; accepted < 5 || accepted > limit {
				t.Fatalf("%d accepted before the in-process bucket refused, want 5 to %d", accepted, limit)
			}
		})
	}
}

// silentAddr returns the address of a listener that accepts connections and never answers, as a hung Redis
// would.
func silentAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				_ = c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	return l.Addr().String()
}

// When Redis stops, intake goes on; when it is back, the buckets are kept in Redis again. The test runs its
// own Redis, which it stops and restarts on the same address (a shared one cannot be stopped).
func TestRateLimitRedisStopsAndReturns(t *testing.T) {
	addr, stop, err := embedded.RunRedis("")
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			stop()
		}
	})
	a := newAPI(t, apiOptions{redisAddr: addr})
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	// The patient's bucket; the restarted Redis is empty, so any such key shows the limiter uses Redis.
	patientBuckets := func() []string {
		return rdb.Keys(t.Context(), "{"+a.cfg.RateLimit.KeyPrefix+":patient:*}.tokens").Val()
	}

	if resp, _ := timedPost(t, a, "PAT-UP"); resp.status != http.StatusAccepted {
		t.Fatalf("status %d", resp.status)
	}
	got := patientBuckets()
	if len(got) != 1 {
		t.Fatalf("patient buckets in Redis while it is up: %v, want one", got)
	}
	// Key listings, MONITOR and the slow log show key names, so keys name no patient.
	if strings.Contains(got[0], "PAT-UP") {
		t.Fatalf("bucket key %q names the patient", got[0])
	}

	stop()
	stopped = true
	for i := range 10 {
		resp, took := timedPost(t, a, "PAT-UP")
		if resp.status != http.StatusAccepted || took > maxRedisDownLatency {
			t.Fatalf("report %d with Redis stopped: status %d after %s", i, resp.status, took)
		}
	}

	if _, stop, err = embedded.RunRedis(addr); err != nil {
		t.Fatalf("restart Redis on %s: %v", addr, err)
	}
	stopped = false
	// The guard's prober pings every 100 ms; once one answers, the patient's bucket is in Redis again.
	waitFor(t, 30*time.Second, "the bucket back in Redis", func() bool {
		if resp, _ := timedPost(t, a, "PAT-UP"); resp.status != http.StatusAccepted {
			t.Fatalf("status %d after Redis came back", resp.status)
		}
		return len(patientBuckets()) == 1
	})
}
