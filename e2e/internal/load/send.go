package load

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/epro-intake/e2e/internal/ledger"
	"github.com/epro-intake/e2e/internal/stack"
)

// NewHTTPClient is a client for up to conns concurrent requests to one host.
func NewHTTPClient(conns int) *http.Client {
	return &http.Client{
		// Well above the API's own 3 s budget, so a slow answer is measured rather than cut off.
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        conns + 16,
			MaxIdleConnsPerHost: conns + 16,
			// Below epro-api's own idle limit: go-zero leaves http.Server.IdleTimeout unset, so the server
			// closes a keep-alive connection after ReadTimeout (4/5 of the 3s Timeout), and a POST sent on a
			// connection the server is closing at that moment fails with EOF and is not retried.
			IdleConnTimeout:    time.Second,
			DisableCompression: true,
		},
	}
}

// Outcome is what the API answered to a plan's sends.
type Outcome struct {
	*ledger.Answers
	mu        sync.Mutex
	sent      int
	resent    int
	codes     map[int]int     // HTTP status (0: no answer) -> count
	failures  []string        // the first few answers other than 202
	patients  map[string]bool // patients that sent anything
	perSender map[int]int     // sends per sender, to show the load was spread
	latencies []time.Duration // of 202 answers
}

func (o *Outcome) record(sender int, patientID string, s Send, code int, detail string, took time.Duration) {
	o.Record(s.RequestID, patientID, code == http.StatusAccepted)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.sent++
	o.patients[patientID] = true
	o.perSender[sender]++
	if s.Resend {
		o.resent++
	}
	o.codes[code]++
	if code == http.StatusAccepted {
		o.latencies = append(o.latencies, took)
	} else if len(o.failures) < 10 {
		o.failures = append(o.failures, fmt.Sprintf("%s (patient %s): %d %s", s.RequestID, patientID, code, detail))
	}
}

// NotAccepted returns how many sends were answered otherwise than 202, of how many, and the first few.
func (o *Outcome) NotAccepted() (n, of int, first []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.sent - o.codes[http.StatusAccepted], o.sent, slices.Clone(o.failures)
}

// Summary says in one line what was sent and answered.
func (o *Outcome) Summary() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	codes := make([]string, 0, len(o.codes))
	for c, n := range o.codes {
		codes = append(codes, fmt.Sprintf("%d×%d", n, c))
	}
	sort.Strings(codes)
	lat := slices.Clone(o.latencies)
	slices.Sort(lat)
	pct := func(q float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(q*float64(len(lat)-1))].Round(time.Millisecond)
	}
	return fmt.Sprintf("%d sends (%d resends) to %d patients by %d senders, answers %s, %d distinct ids accepted; 202 latency p50 %s p99 %s max %s",
		o.sent, o.resent, len(o.patients), len(o.perSender), strings.Join(codes, " "),
		len(o.Accepted()), pct(0.5), pct(0.99), pct(1))
}

// PlanRun drives a plan against the API: Senders goroutines, each owning every Senders-th patient and
// sending its patients' reports in turn, one patient's reports strictly one after the other (the next only
// after the previous one's answer), at most Rate sends per second overall (0: as fast as it goes). It stops
// early when Stop is closed. Progress counts finished sends.
type PlanRun struct {
	URL      string // POST target
	Client   *http.Client
	Plan     *Plan
	Senders  int
	Rate     float64
	Stop     <-chan struct{}
	Progress atomic.Int64
	Outcome  *Outcome
}

// NewPlanRun prepares a run of plan against base, the API's base URL.
func NewPlanRun(base string, client *http.Client, plan *Plan, senders int, rate float64, stop <-chan struct{}) *PlanRun {
	return &PlanRun{
		URL: base + "/v1/reports", Client: client, Plan: plan, Senders: senders, Rate: rate, Stop: stop,
		Outcome: &Outcome{Answers: ledger.NewAnswers(), codes: map[int]int{}, perSender: map[int]int{}, patients: map[string]bool{}},
	}
}

// Run sends the plan and returns when it is sent or Stop is closed.
func (l *PlanRun) Run() {
	var tokens <-chan time.Time
	if l.Rate > 0 {
		tick := time.NewTicker(time.Duration(float64(time.Second) / l.Rate))
		defer tick.Stop()
		tokens = tick.C
	}
	var wg sync.WaitGroup
	for s := range l.Senders {
		wg.Go(func() {
			var mine []*Patient
			for i := s; i < len(l.Plan.Patients); i += l.Senders {
				mine = append(mine, l.Plan.Patients[i])
			}
			next := make([]int, len(mine))
			for {
				progressed := false
				for i, ps := range mine {
					if next[i] >= len(ps.Sends) {
						continue
					}
					if tokens != nil {
						select {
						case <-tokens:
						case <-l.Stop:
							return
						}
					}
					select {
					case <-l.Stop:
						return
					default:
					}
					l.send(s, ps.ID, ps.Sends[next[i]])
					next[i]++
					progressed = true
				}
				if !progressed {
					return
				}
			}
		})
	}
	wg.Wait()
}

func (l *PlanRun) send(sender int, patientID string, s Send) {
	start := time.Now()
	code, answer, err := stack.Call(context.Background(), l.Client, http.MethodPost, l.URL, s.Body)
	detail := string(answer)
	if err != nil {
		code, detail = 0, err.Error()
	}
	l.Outcome.record(sender, patientID, s, code, detail, time.Since(start))
	l.Progress.Add(1)
}
