package load

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/epro-intake/e2e/internal/stack"
)

// Spec is one load phase. Exactly one of concurrency (closed loop) and rate (open loop) is set.
type Spec struct {
	Name        string
	Concurrency int
	Rate        float64
	// MaxInflight caps the open loop's workers; when all are busy, arrivals queue and their latency still
	// counts from their scheduled time.
	MaxInflight int
	Duration    time.Duration // 0: until N
	N           int           // 0: until Duration
}

// Describe says in a few words what the phase does.
func (s Spec) Describe() string {
	bound := ""
	switch {
	case s.N > 0 && s.Duration > 0:
		bound = fmt.Sprintf("%d requests or %s", s.N, s.Duration)
	case s.N > 0:
		bound = fmt.Sprintf("%d requests", s.N)
	default:
		bound = s.Duration.String()
	}
	if s.Rate > 0 {
		return fmt.Sprintf("open loop %.0f/s, %s", s.Rate, bound)
	}
	return fmt.Sprintf("closed loop %d conns, %s", s.Concurrency, bound)
}

// Accepted is one 202: the id and when the client had the whole answer.
type Accepted struct {
	ID string
	At time.Time
}

// Result is what one phase saw from the client side.
type Result struct {
	Spec    Spec
	Start   time.Time
	Elapsed time.Duration // start to the last answer
	Sent    int
	Codes   map[int]int
	NetErrs int
	Lat     []int64 // ns, every request that got an answer or failed
	// SendLat is from the actual send, which in the open loop can trail the schedule when the generator is
	// starved of CPU; lat minus sendLat is the generator's own lateness, not the API's.
	SendLat  []int64
	Accepted []Accepted
	// Refused are ids sent without getting a 202 (error status, timeout, broken connection). A row for one
	// of them is not a bug: the API may time out after Kafka took the report, and the client's retry dedupes.
	Refused []string
	// ErrKinds counts connection errors by message, so a run says what failed and not only how often.
	ErrKinds map[string]int
	// Late counts open-loop requests sent more than 1 ms after their scheduled time: the generator could not
	// keep up, and their latency includes the wait.
	Late int
}

// Run drives POST url according to spec with fresh reports of patients patients.
func Run(ctx context.Context, client *http.Client, url string, answers AnswerSet, patients int, spec Spec) *Result {
	workers := spec.Concurrency
	var interval time.Duration
	if spec.Rate > 0 {
		workers = spec.MaxInflight
		interval = time.Duration(float64(time.Second) / spec.Rate)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var issued atomic.Int64
	recs := make([]*Result, workers) // one per worker, so recording takes no lock
	lasts := make([]time.Time, workers)
	var wg sync.WaitGroup
	// Start a moment ahead so that every worker is waiting when the first arrival is due.
	start := time.Now().Add(20 * time.Millisecond)
	end := time.Time{}
	if spec.Duration > 0 {
		end = start.Add(spec.Duration)
	}
	for w := 0; w < workers; w++ {
		rec := &Result{Codes: map[int]int{}, ErrKinds: map[string]int{}}
		recs[w] = rec
		wg.Add(1)
		go func() {
			defer wg.Done()
			gen := NewGenerator(answers, patients)
			timer := time.NewTimer(time.Hour)
			defer timer.Stop()
			if !sleepUntil(ctx, timer, start) {
				return
			}
			for {
				i := issued.Add(1) - 1
				if spec.N > 0 && i >= int64(spec.N) {
					return
				}
				var sched time.Time
				if interval > 0 {
					sched = start.Add(time.Duration(i) * interval)
					if !end.IsZero() && !sched.Before(end) {
						return
					}
					if !sleepUntil(ctx, timer, sched) {
						return
					}
					if time.Since(sched) > time.Millisecond {
						rec.Late++
					}
				} else {
					sched = time.Now()
					if !end.IsZero() && !sched.Before(end) {
						return
					}
				}
				if ctx.Err() != nil {
					return
				}
				id, body := gen.Next(sched)
				sent := time.Now()
				code, _, err := stack.Call(ctx, client, http.MethodPost, url, body)
				done := time.Now()
				lasts[w] = done
				rec.Lat = append(rec.Lat, int64(done.Sub(sched)))
				rec.SendLat = append(rec.SendLat, int64(done.Sub(sent)))
				switch {
				case err != nil:
					rec.NetErrs++
					if len(rec.ErrKinds) < 8 {
						rec.ErrKinds[err.Error()]++
					}
					rec.Refused = append(rec.Refused, id)
				case code == http.StatusAccepted:
					rec.Codes[code]++
					rec.Accepted = append(rec.Accepted, Accepted{ID: id, At: done})
				default:
					rec.Codes[code]++
					rec.Refused = append(rec.Refused, id)
				}
			}
		}()
	}
	wg.Wait()

	res := &Result{Spec: spec, Start: start, Codes: map[int]int{}, ErrKinds: map[string]int{}}
	last := start
	for w, r := range recs {
		for c, n := range r.Codes {
			res.Codes[c] += n
		}
		res.NetErrs += r.NetErrs
		for k, n := range r.ErrKinds {
			res.ErrKinds[k] += n
		}
		res.Lat = append(res.Lat, r.Lat...)
		res.SendLat = append(res.SendLat, r.SendLat...)
		res.Accepted = append(res.Accepted, r.Accepted...)
		res.Refused = append(res.Refused, r.Refused...)
		res.Late += r.Late
		if lasts[w].After(last) {
			last = lasts[w]
		}
	}
	res.Sent = len(res.Lat)
	res.Elapsed = last.Sub(start)
	return res
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
