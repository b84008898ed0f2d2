package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// loadSpec is one load phase. Exactly one of concurrency (closed loop) and rate (open loop) is set.
type loadSpec struct {
	name        string
	concurrency int
	rate        float64
	// maxInflight caps the open loop's workers; when all are busy, arrivals queue and their latency still
	// counts from their scheduled time.
	maxInflight int
	duration    time.Duration // 0: until n
	n           int           // 0: until duration
}

func (s loadSpec) describe() string {
	bound := ""
	switch {
	case s.n > 0 && s.duration > 0:
		bound = fmt.Sprintf("%d requests or %s", s.n, s.duration)
	case s.n > 0:
		bound = fmt.Sprintf("%d requests", s.n)
	default:
		bound = s.duration.String()
	}
	if s.rate > 0 {
		return fmt.Sprintf("open loop %.0f/s, %s", s.rate, bound)
	}
	return fmt.Sprintf("closed loop %d conns, %s", s.concurrency, bound)
}

// acceptedReport is one 202: the id and when the client had the whole answer.
type acceptedReport struct {
	id string
	at time.Time
}

// loadResult is what one phase saw from the client side.
type loadResult struct {
	spec    loadSpec
	start   time.Time
	elapsed time.Duration // start to the last answer
	sent    int
	codes   map[int]int
	netErrs int
	lat     []int64 // ns, every request that got an answer or failed
	// sendLat is from the actual send, which in the open loop can trail the schedule when the generator is
	// starved of CPU; lat minus sendLat is the generator's own lateness, not the API's.
	sendLat  []int64
	accepted []acceptedReport
	// refused are ids sent without getting a 202 (error status, timeout, broken connection). A row for one
	// of them is not a bug: the API may time out after Kafka took the report, and the client's retry dedupes.
	refused []string
	// errKinds counts connection errors by message, so a run says what failed and not only how often.
	errKinds map[string]int
	// late counts open-loop requests sent more than 1 ms after their scheduled time: the generator could not
	// keep up, and their latency includes the wait.
	late int
}

// recorder is one worker's share of a loadResult; workers never share one, so recording takes no lock.
type recorder struct {
	codes    map[int]int
	netErrs  int
	errKinds map[string]int
	lat      []int64
	sendLat  []int64
	accepted []acceptedReport
	refused  []string
	late     int
	last     time.Time
}

func newHTTPClient(conns int) *http.Client {
	return &http.Client{
		// Well above the API's own 3 s budget, so a slow answer is measured rather than cut off.
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        conns + 16,
			MaxIdleConnsPerHost: conns + 16,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
			ForceAttemptHTTP2:   false,
		},
	}
}

// runLoad drives POST url according to spec.
func runLoad(ctx context.Context, client *http.Client, url string, answers answerSet, patients int, spec loadSpec) *loadResult {
	workers := spec.concurrency
	var interval time.Duration
	if spec.rate > 0 {
		workers = spec.maxInflight
		interval = time.Duration(float64(time.Second) / spec.rate)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var issued atomic.Int64
	recs := make([]*recorder, workers)
	var wg sync.WaitGroup
	// Start a moment ahead so that every worker is waiting when the first arrival is due.
	start := time.Now().Add(20 * time.Millisecond)
	end := time.Time{}
	if spec.duration > 0 {
		end = start.Add(spec.duration)
	}
	for w := 0; w < workers; w++ {
		rec := &recorder{codes: map[int]int{}, errKinds: map[string]int{}}
		recs[w] = rec
		wg.Add(1)
		go func() {
			defer wg.Done()
			gen := newReportGen(answers, patients)
			timer := time.NewTimer(time.Hour)
			defer timer.Stop()
			if !sleepUntil(ctx, timer, start) {
				return
			}
			for {
				i := issued.Add(1) - 1
				if spec.n > 0 && i >= int64(spec.n) {
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
						rec.late++
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
				id, body := gen.next(sched)
				sent := time.Now()
				code, err := post(ctx, client, url, body)
				done := time.Now()
				rec.last = done
				rec.lat = append(rec.lat, int64(done.Sub(sched)))
				rec.sendLat = append(rec.sendLat, int64(done.Sub(sent)))
				switch {
				case err != nil:
					rec.netErrs++
					if len(rec.errKinds) < 8 {
						rec.errKinds[err.Error()]++
					}
					rec.refused = append(rec.refused, id)
				case code == http.StatusAccepted:
					rec.codes[code]++
					rec.accepted = append(rec.accepted, acceptedReport{id: id, at: done})
				default:
					rec.codes[code]++
					rec.refused = append(rec.refused, id)
				}
			}
		}()
	}
	wg.Wait()

	res := &loadResult{spec: spec, start: start, codes: map[int]int{}, errKinds: map[string]int{}}
	last := start
	for _, r := range recs {
		for c, n := range r.codes {
			res.codes[c] += n
		}
		res.netErrs += r.netErrs
		for k, n := range r.errKinds {
			res.errKinds[k] += n
		}
		res.lat = append(res.lat, r.lat...)
		res.sendLat = append(res.sendLat, r.sendLat...)
		res.accepted = append(res.accepted, r.accepted...)
		res.refused = append(res.refused, r.refused...)
		res.late += r.late
		if r.last.After(last) {
			last = r.last
		}
	}
	res.sent = len(res.lat)
	res.elapsed = last.Sub(start)
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

func post(ctx context.Context, client *http.Client, url string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	// Reading to EOF lets the connection be reused; the 202's fields are checked against MySQL later.
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}
