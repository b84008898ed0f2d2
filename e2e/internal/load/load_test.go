package load_test

import (
	"context"
	"encoding/json"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/e2e/internal/load"
)

func TestPlanResendsAndBodies(t *testing.T) {
	plan := load.NewPlan(mrand.New(mrand.NewPCG(1, 2)), 7, 100, 0.2)
	if plan.Total != 100 || plan.Distinct != 80 || len(plan.Patients) != 7 {
		t.Fatalf("plan of %d sends, %d distinct, %d patients; want 100, 80, 7", plan.Total, plan.Distinct, len(plan.Patients))
	}
	now := time.Now()
	for _, p := range plan.Patients {
		seen := map[string]string{}
		for j, s := range p.Sends {
			if s.Resend != (seen[s.RequestID] != "") || (j == 0 && s.Resend) {
				t.Fatalf("%s send %d: resend %v, seen before %v", p.ID, j, s.Resend, seen[s.RequestID] != "")
			}
			if s.Resend && seen[s.RequestID] != string(s.Body) {
				t.Fatalf("%s send %d repeats %s with another body", p.ID, j, s.RequestID)
			}
			seen[s.RequestID] = string(s.Body)
			sub, err := report.ParseSubmission(s.Body)
			if err != nil {
				t.Fatalf("%s: %v", s.Body, err)
			}
			if err := sub.Validate(now, report.Limits{MaxAge: 24 * time.Hour, MaxSkew: time.Minute}); err != nil {
				t.Fatalf("%s: %v", s.Body, err)
			}
			if sub.RequestID != s.RequestID || sub.PatientID != p.ID {
				t.Fatalf("body of %s for %s says %s for %s", s.RequestID, p.ID, sub.RequestID, sub.PatientID)
			}
		}
	}
	if _, err := load.CheckGenerated(load.NewAnswerSet(4, mrand.New(mrand.NewPCG(3, 4))), 10); err != nil {
		t.Fatal(err)
	}
}

// A plan's sends reach the API one patient after the other, every send is recorded with its answer, and
// stopping a phase lets the sends in flight finish.
func TestPlanPhaseKeepsPatientOrderAndRecordsEveryAnswer(t *testing.T) {
	plan := load.NewPlan(mrand.New(mrand.NewPCG(5, 6)), 10, 200, 0.1)
	var mu sync.Mutex
	got := map[string][]string{} // patient -> request ids in arrival order
	var calls atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var sub struct{ RequestID, PatientID string }
		if err := json.NewDecoder(r.Body).Decode(&sub); err != nil {
			t.Error(err)
		}
		mu.Lock()
		got[sub.PatientID] = append(got[sub.PatientID], sub.RequestID)
		mu.Unlock()
		if calls.Add(1)%17 == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer api.Close()

	res := load.Run(context.Background(), api.Client(), api.URL, plan, load.Spec{Concurrency: 3})
	if res.Sent != 200 || len(res.Accepted)+len(res.Refused) != 200 || res.Codes[http.StatusServiceUnavailable] != len(res.Refused) {
		t.Fatalf("sent %d, accepted %d, refused %d, codes %v", res.Sent, len(res.Accepted), len(res.Refused), res.Codes)
	}
	for _, p := range plan.Patients {
		var want []string
		for _, s := range p.Sends {
			want = append(want, s.RequestID)
		}
		if !slices.Equal(got[p.ID], want) {
			t.Fatalf("%s: sends arrived as %v, want %v", p.ID, got[p.ID], want)
		}
	}
	if a := load.Answers(res); a.NeverAccepted() == 0 || len(a.Accepted()) == 0 {
		t.Errorf("answers: %d accepted, %d never accepted", len(a.Accepted()), a.NeverAccepted())
	}

	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(50 * time.Millisecond)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer slow.Close()
	ph := load.Start(context.Background(), slow.Client(), slow.URL, load.NewPlan(mrand.New(mrand.NewPCG(7, 8)), 4, 1000, 0), load.Spec{Concurrency: 4})
	time.Sleep(120 * time.Millisecond)
	ph.Stop()
	res = ph.Wait()
	if res.Sent == 0 || res.Sent >= 1000 || len(res.Accepted) != res.Sent || int64(res.Sent) != ph.Progress() {
		t.Errorf("stopped phase: sent %d, accepted %d, progress %d; want every send of a partial run accepted",
			res.Sent, len(res.Accepted), ph.Progress())
	}
}

// countingTokens hands out one Authorization value per patient and counts how often each is asked for.
type countingTokens struct {
	mu    sync.Mutex
	asked map[string]int
}

func (c *countingTokens) Authorization(patient string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.asked[patient]++
	return "Bearer token-of-" + patient, nil
}

// With Tokens, each send carries its own patient's Authorization header.
func TestPhaseSendsEachPatientsToken(t *testing.T) {
	var wrong, calls atomic.Int64
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var sub struct{ PatientID string }
		if err := json.NewDecoder(r.Body).Decode(&sub); err != nil {
			t.Error(err)
		}
		calls.Add(1)
		if r.Header.Get("Authorization") != "Bearer token-of-"+sub.PatientID {
			wrong.Add(1)
			w.WriteHeader(http.StatusForbidden)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer api.Close()
	tokens := &countingTokens{asked: map[string]int{}}
	plan := load.NewPlan(mrand.New(mrand.NewPCG(9, 10)), 5, 60, 0)
	res := load.Run(context.Background(), api.Client(), api.URL, plan, load.Spec{Concurrency: 3, Tokens: tokens})
	if wrong.Load() != 0 || calls.Load() != 60 || len(res.Accepted) != 60 || len(tokens.asked) != 5 {
		t.Fatalf("%d of %d sends without their patient's token; accepted %d; tokens for %d patients", wrong.Load(), calls.Load(), len(res.Accepted), len(tokens.asked))
	}
	// Without Tokens no header is sent: the server refuses every send.
	wrong.Store(0)
	res = load.Run(context.Background(), api.Client(), api.URL, load.NewPlan(mrand.New(mrand.NewPCG(9, 10)), 5, 10, 0), load.Spec{Concurrency: 2})
	if wrong.Load() != 10 || len(res.Accepted) != 0 {
		t.Fatalf("without Tokens: %d refused, %d accepted", wrong.Load(), len(res.Accepted))
	}
}

// With Retry, a report answered 503 or not answered is sent again with the same request id until it is
// accepted, and the patient's next report waits for that: the arrival order of a patient's first accepted
// sends is its plan order, and every send shows in Attempts.
func TestRetrySendsTheSameReportUntilAccepted(t *testing.T) {
	plan := load.NewPlan(mrand.New(mrand.NewPCG(7, 8)), 5, 60, 0)
	var mu sync.Mutex
	tries := map[string]int{}
	accepted := map[string][]string{} // patient -> request ids in the order they were accepted
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var sub struct{ RequestID, PatientID string }
		if err := json.NewDecoder(r.Body).Decode(&sub); err != nil {
			t.Errorf("decode: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		tries[sub.RequestID]++
		// Every third report is refused twice, once with a dropped connection.
		switch n := tries[sub.RequestID]; {
		case sub.RequestID[0]%3 == 0 && n == 1:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"code":"INGEST_UNAVAILABLE","message":"later"}`))
		case sub.RequestID[0]%3 == 0 && n == 2:
			hj, _ := w.(http.Hijacker)
			conn, _, _ := hj.Hijack()
			_ = conn.Close()
		default:
			accepted[sub.PatientID] = append(accepted[sub.PatientID], sub.RequestID)
			w.WriteHeader(http.StatusAccepted)
		}
	}))
	defer api.Close()
	out := load.Run(context.Background(), load.NewHTTPClient(4), api.URL, plan,
		load.Spec{Concurrency: 3, Retry: load.Retry{Pause: time.Millisecond, For: 10 * time.Second}})

	refusedTwice := 0
	for _, n := range tries {
		if n == 3 {
			refusedTwice++
		}
	}
	if refusedTwice == 0 {
		t.Fatal("no report was refused; the test does not exercise the retry")
	}
	if len(out.Accepted) != 60 || len(out.Refused) != 0 || out.Retries != 2*refusedTwice {
		t.Fatalf("%d accepted, %d refused, %d retries; want 60, 0, %d", len(out.Accepted), len(out.Refused), out.Retries, 2*refusedTwice)
	}
	if len(out.Attempts) != 60+2*refusedTwice || out.Codes[http.StatusServiceUnavailable] != refusedTwice || out.NetErrs != refusedTwice {
		t.Fatalf("%d attempts, %d 503s, %d without answer; want %d, %d, %d",
			len(out.Attempts), out.Codes[http.StatusServiceUnavailable], out.NetErrs, 60+2*refusedTwice, refusedTwice, refusedTwice)
	}
	unavailable := 0
	for _, a := range out.Attempts {
		if a.Unavailable {
			unavailable++
		}
	}
	if unavailable != refusedTwice {
		t.Errorf("%d attempts marked INGEST_UNAVAILABLE, want %d", unavailable, refusedTwice)
	}
	for _, p := range plan.Patients {
		var want []string
		for _, s := range p.Sends {
			want = append(want, s.RequestID)
		}
		if !slices.Equal(accepted[p.ID], want) {
			t.Errorf("%s: accepted in order %v, planned %v", p.ID, accepted[p.ID], want)
		}
	}
}
