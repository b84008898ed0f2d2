package load

import (
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/epro-intake/e2e/internal/stack"
)

// Send is one POST /v1/reports. A resend repeats an earlier send of the same patient byte for byte.
type Send struct {
	RequestID string
	Body      []byte
	Resend    bool
}

// Patient is one patient's sends in submission order.
type Patient struct {
	ID    string
	Sends []Send
}

// Plan is the reports of a set of patients.
type Plan struct {
	Patients []*Patient
	Total    int // sends
	Distinct int // request ids
}

// NewPlan spreads total sends over patients; exactly resendShare of them (never a patient's first) repeat an
// earlier request id of the same patient. submittedAt grows by a minute per report of a patient and stays
// inside the API's MaxAge and MaxSkew.
func NewPlan(rng *mrand.Rand, patients, total int, resendShare float64) *Plan {
	base := time.Now().Add(-3 * time.Hour).Truncate(time.Second)
	counts := make([]int, patients)
	for i := range total {
		counts[i%patients]++
	}
	type pos struct{ p, j int }
	var candidates []pos
	for p, n := range counts {
		for j := 1; j < n; j++ {
			candidates = append(candidates, pos{p, j})
		}
	}
	rng.Shuffle(len(candidates), func(i, j int) { candidates[i], candidates[j] = candidates[j], candidates[i] })
	resend := map[pos]bool{}
	for _, c := range candidates[:int(float64(total)*resendShare+0.5)] {
		resend[c] = true
	}
	plan := &Plan{Total: total}
	for p, n := range counts {
		ps := &Patient{ID: fmt.Sprintf("patient-%04d", p)}
		var firsts []Send
		for j := range n {
			if resend[pos{p, j}] {
				s := firsts[rng.IntN(len(firsts))]
				s.Resend = true
				ps.Sends = append(ps.Sends, s)
				continue
			}
			id := stack.NewUUID()
			seq := len(firsts)
			answers := fmt.Appendf(nil, `{"q1":%d,"q2":%q}`, seq%4, Marker)
			s := Send{RequestID: id, Body: AppendBody(nil, id, ps.ID, base.Add(time.Duration(seq)*time.Minute), answers)}
			firsts = append(firsts, s)
			ps.Sends = append(ps.Sends, s)
			plan.Distinct++
		}
		plan.Patients = append(plan.Patients, ps)
	}
	return plan
}

// Worker implements Source: worker w owns every workers-th patient and sends its patients' reports in
// turn, so that one patient's reports go strictly one after the other, each after the previous one's answer.
func (p *Plan) Worker(w, workers int) func(time.Time) (Send, string, bool) {
	var mine []*Patient
	for i := w; i < len(p.Patients); i += workers {
		mine = append(mine, p.Patients[i])
	}
	next := make([]int, len(mine))
	turn := 0
	return func(time.Time) (Send, string, bool) {
		for range mine {
			i := turn % len(mine)
			turn++
			if ps := mine[i]; next[i] < len(ps.Sends) {
				next[i]++
				return ps.Sends[next[i]-1], ps.ID, true
			}
		}
		return Send{}, "", false
	}
}
