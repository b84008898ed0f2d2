package load

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/epro-intake/e2e/internal/ledger"
	"github.com/epro-intake/e2e/internal/stack"
)

// Source gives each of a phase's workers its own stream of reports. The function it returns is called by
// one worker only; ok false means that worker has nothing more to send.
type Source interface {
	Worker(w, workers int) func(now time.Time) (s Send, patientID string, ok bool)
}

// Spec is one load phase: a closed loop of Concurrency workers, each sending its next report when the last
// is answered, or with Rate set an open loop on a fixed schedule. It ends after Duration or N sends (0: no
// bound), when the source runs dry, or when it is stopped.
type Spec struct {
	Name        string
	Concurrency int
	Rate        float64
	// MaxInflight caps the open loop's workers (0: Concurrency); when all are busy, arrivals queue and their
	// latency still counts from their scheduled time.
	MaxInflight int
	Duration    time.Duration
	N           int
	// Tokens gives each send its patient's Authorization header (epro-api requires one); nil sends none.
	Tokens Tokens
	// Retry, when its Pause is set, makes each worker behave as a patient's app does: a send answered 503 or
	// not answered at all is sent again, same request id and body, until it is answered 2xx, and the
	// patient's next report waits for that. Without it, such a send is refused and the worker moves on.
	Retry Retry
}

// Retry says how a worker sends a report again (see Spec.Retry).
type Retry struct {
	// Pause is the wait between two sends of one report.
	Pause time.Duration
	// For bounds how long one report is retried, from its first send; the report is refused after that.
	// It runs on after the phase is stopped, so that stopping a load does not turn a retried report into an
	// unknown.
	For time.Duration
}

// Tokens gives the Authorization header value for a patient's requests. stack.PatientTokens mints each
// patient's token once, so a phase does not spend its CPU signing.
type Tokens interface {
	Authorization(patientID string) (string, error)
}

// Describe says in a few words what the phase does.
func (s Spec) Describe() string {
	bound := "until stopped"
	switch {
	case s.N > 0 && s.Duration > 0:
		bound = fmt.Sprintf("%d requests or %s", s.N, s.Duration)
	case s.N > 0:
		bound = fmt.Sprintf("%d requests", s.N)
	case s.Duration > 0:
		bound = s.Duration.String()
	}
	if s.Rate > 0 {
		return fmt.Sprintf("open loop %.0f/s, %s", s.Rate, bound)
	}
	return fmt.Sprintf("closed loop %d conns, %s", s.Concurrency, bound)
}

// Answer is one send's request id and patient, and when the client had the whole answer.
type Answer struct {
	ID      string
	Patient string
	At      time.Time
}

// Result is what one phase saw from the client side.
type Result struct {
	Spec    Spec
	Start   time.Time
	Elapsed time.Duration // start to the last answer
	Sent    int
	Resent  int         // sends that repeated an earlier request id
	Codes   map[int]int // HTTP status -> count; connection errors are NetErrs
	NetErrs int
	Lat     []int64 // ns, every request that got an answer or failed
	// SendLat is from the actual send, which in the open loop can trail the schedule when the generator is
	// starved of CPU; Lat minus SendLat is the generator's own lateness, not the API's.
	SendLat  []int64
	Accepted []Answer // answered 202, each worker's in the order of its sends
	// Refused are sends without a 202 (error status, timeout, broken connection). A row for one of them is
	// not a bug: the API may time out after Kafka took the report, and the client's retry dedupes.
	Refused []Answer
	// Failures are the first few sends without a 202, with what came back.
	Failures []string
	// ErrKinds counts connection errors by message, so a run says what failed and not only how often.
	ErrKinds map[string]int
	// Late counts open-loop requests sent more than 1 ms after their scheduled time: the generator could not
	// keep up, and their latency includes the wait.
	Late int
	// Retries counts sends that repeated a report after a 503 or no answer (Spec.Retry); Codes and NetErrs
	// count every send, retries included.
	Retries int
	// Attempts is every send with Spec.Retry set, retries included, in no particular order.
	Attempts []Attempt
}

// Attempt is one send of a report and its answer.
type Attempt struct {
	ID, Patient string
	Sent, At    time.Time
	Code        int // 0: no answer
	// Unavailable is true when the answer was epro-api's 503 INGEST_UNAVAILABLE.
	Unavailable bool
}

// Accepted reports whether the answer was a 2xx receipt: 202, or 200 for a resend whose first send was
// accepted (epro-api's request-id contract).
func (a Attempt) Accepted() bool { return a.Code == http.StatusAccepted || a.Code == http.StatusOK }

// Answers is what the client learnt in the given phases, for a ledger check.
func Answers(phases ...*Result) *ledger.Answers {
	a := ledger.NewAnswers()
	for _, r := range phases {
		for _, x := range r.Accepted {
			a.Record(x.ID, x.Patient, true)
		}
		for _, x := range r.Refused {
			a.Record(x.ID, x.Patient, false)
		}
	}
	return a
}

// Summary says in one line what was sent and answered.
func (r *Result) Summary() string {
	return fmt.Sprintf("%d sends (%d resends, %d retries), %s, %d accepted, statuses %v, %d without an answer, in %s",
		r.Sent, r.Resent, r.Retries, r.Spec.Describe(), len(r.Accepted), r.Codes, r.NetErrs, r.Elapsed.Round(time.Millisecond))
}

// NewHTTPClient is a client for up to conns concurrent requests to one host.
func NewHTTPClient(conns int) *http.Client {
	return &http.Client{
		// Well above the API's own 3 s budget, so a slow answer is measured rather than cut off.
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        conns + 16,
			MaxIdleConnsPerHost: conns + 16,
			// Well below epro-api's HTTP.IdleTimeout: a POST sent on a connection the server is closing at that
			// moment fails with EOF and is not retried.
			IdleConnTimeout:    time.Second,
			DisableCompression: true,
		},
	}
}

// Phase is a load phase under way.
type Phase struct {
	stop     context.CancelFunc
	done     chan struct{}
	progress atomic.Int64
	result   *Result
	mu       *sync.Mutex // guards live
	live     *Result     // the result being filled in
}

// Run drives POST url with src according to spec and returns when the phase is over.
func Run(ctx context.Context, client *http.Client, url string, src Source, spec Spec) *Result {
	return Start(ctx, client, url, src, spec).Wait()
}

// Start starts a phase. Stopping it, or cancelling ctx, ends it after the sends in flight are answered:
// stopping a load never turns a 202 into an unknown.
func Start(ctx context.Context, client *http.Client, url string, src Source, spec Spec) *Phase {
	workers := spec.Concurrency
	var interval time.Duration
	if spec.Rate > 0 {
		workers = cmp.Or(spec.MaxInflight, spec.Concurrency)
		interval = time.Duration(float64(time.Second) / spec.Rate)
	}
	ctx, cancel := context.WithCancel(ctx)
	p := &Phase{stop: cancel, done: make(chan struct{})}
	sendCtx := context.WithoutCancel(ctx)

	var issued atomic.Int64
	// One record for all workers: its lock is held for a few appends per HTTP round trip, so it is never
	// what limits the load.
	var mu sync.Mutex
	res := &Result{Spec: spec, Codes: map[int]int{}, ErrKinds: map[string]int{}}
	p.mu, p.live = &mu, res
	var wg sync.WaitGroup
	// Start a moment ahead so that every worker is waiting when the first arrival is due.
	res.Start = time.Now().Add(20 * time.Millisecond)
	end := time.Time{}
	if spec.Duration > 0 {
		end = res.Start.Add(spec.Duration)
	}
	for w := range workers {
		next := src.Worker(w, workers)
		wg.Go(func() {
			timer := time.NewTimer(time.Hour)
			defer timer.Stop()
			if !sleepUntil(ctx, timer, res.Start) {
				return
			}
			for {
				i := issued.Add(1) - 1
				if spec.N > 0 && i >= int64(spec.N) {
					return
				}
				sched, late := time.Now(), false
				if interval > 0 {
					sched = res.Start.Add(time.Duration(i) * interval)
				}
				if !end.IsZero() && !sched.Before(end) {
					return
				}
				if interval > 0 {
					if !sleepUntil(ctx, timer, sched) {
						return
					}
					late = time.Since(sched) > time.Millisecond
				}
				if ctx.Err() != nil {
					return
				}
				s, patient, ok := next(sched)
				if !ok {
					return
				}
				var header []string
				var err error
				if spec.Tokens != nil {
					var authz string
					authz, err = spec.Tokens.Authorization(patient)
					header = []string{"Authorization", authz}
				}
				var (
					code   int
					answer []byte
					sent   time.Time
					done   time.Time
				)
				// count notes one answer in Codes, or in NetErrs when there was none. With Spec.Retry every send
				// is counted; without, the one send. mu is held.
				count := func(code int, err error) {
					if err != nil {
						res.NetErrs++
						if len(res.ErrKinds) < 8 {
							res.ErrKinds[err.Error()]++
						}
						return
					}
					res.Codes[code]++
				}
				// A report without its token is not sent at all, so there is nothing to retry.
				retrying := spec.Retry.Pause > 0 && err == nil
				first := time.Now()
				for attempt := 0; ; attempt++ {
					sent = time.Now()
					if err == nil {
						code, answer, err = stack.Call(sendCtx, client, http.MethodPost, url, s.Body, header...)
					}
					done = time.Now()
					if !retrying {
						break
					}
					mu.Lock()
					res.Attempts = append(res.Attempts, Attempt{ID: s.RequestID, Patient: patient, Sent: sent, At: done, Code: code,
						Unavailable: code == http.StatusServiceUnavailable && bytes.Contains(answer, []byte(`"INGEST_UNAVAILABLE"`))})
					if attempt > 0 {
						res.Retries++
					}
					count(code, err)
					mu.Unlock()
					if err == nil && code != http.StatusServiceUnavailable || done.Sub(first) >= spec.Retry.For {
						break
					}
					time.Sleep(spec.Retry.Pause)
					code, answer, err = 0, nil, nil
				}
				a := Answer{ID: s.RequestID, Patient: patient, At: done}
				mu.Lock()
				res.Elapsed = max(res.Elapsed, done.Sub(res.Start))
				res.Lat = append(res.Lat, int64(done.Sub(sched)))
				res.SendLat = append(res.SendLat, int64(done.Sub(sent)))
				if s.Resend {
					res.Resent++
				}
				if late {
					res.Late++
				}
				if !retrying {
					count(code, err)
				}
				if err != nil {
					answer = []byte(err.Error())
				}
				// 200 is the original receipt of a resend whose first send was accepted (epro-api's request-id
				// contract): the report is accepted all the same.
				if code == http.StatusAccepted || code == http.StatusOK {
					res.Accepted = append(res.Accepted, a)
				} else {
					res.Refused = append(res.Refused, a)
					if len(res.Failures) < 10 {
						res.Failures = append(res.Failures, fmt.Sprintf("%s (patient %s): %d %s", a.ID, patient, code, answer))
					}
				}
				res.Sent++
				mu.Unlock()
				p.progress.Add(1)
			}
		})
	}
	go func() {
		defer close(p.done)
		defer cancel()
		wg.Wait()
		p.result = res
	}()
	return p
}

// Progress counts the sends answered so far.
func (p *Phase) Progress() int64 { return p.progress.Load() }

// Attempts returns the sends answered so far with Spec.Retry set, retries included.
func (p *Phase) Attempts() []Attempt {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.live.Attempts)
}

// Done is closed when the phase is over.
func (p *Phase) Done() <-chan struct{} { return p.done }

// Stop ends the phase once the sends in flight are answered; Wait returns then.
func (p *Phase) Stop() { p.stop() }

// Wait waits for the end of the phase and returns what it saw.
func (p *Phase) Wait() *Result {
	<-p.done
	return p.result
}

func sleepUntil(ctx context.Context, timer *time.Timer, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer.Reset(d)
	select {
	case <-ctx.Done():
		// Since Go 1.23 a stopped timer delivers nothing stale, so there is no channel to drain.
		timer.Stop()
		return false
	case <-timer.C:
		return true
	}
}
