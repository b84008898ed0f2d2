package main

import (
	"context"
	"slices"
	"time"

	"github.com/epro-intake/e2e/internal/ledger"
	"github.com/epro-intake/e2e/internal/load"
)

// evaluate reads the stored rows and turns phases into results: end-to-end latency per accepted report,
// the drain rate and the integrity counts.
func (b *bench) evaluate(ctx context.Context, phases []*phaseRun, drain *drainRun) error {
	results := make([]*load.Result, len(phases))
	for i, p := range phases {
		results[i] = p.load
	}
	answers := load.Answers(results...)
	var ids []string // every row of the benchmark's own database, or only those of the ids it sent
	in := Integrity{Scope: "every row of the benchmark's own database"}
	if !b.managed {
		ids = answers.Sent()
		in.Scope = "rows of the ids this run sent; rows others wrote to the shared table are not looked at"
	}
	rows, err := ledger.Rows(ctx, b.db, ids...)
	if err != nil {
		return err
	}
	// Reports are sent by many workers at once, so no patient order is known.
	f := ledger.Check(rows, answers, ledger.Options{})
	in.Accepted, in.Stored, in.Lost, in.Duplicated = f.Accepted, f.Stored, len(f.Lost), len(f.Duplicated)
	in.UnexpectedRefused, in.UnexpectedForeign = len(f.UnexpectedRefused), len(f.UnexpectedForeign)
	in.Unexpected = in.UnexpectedRefused + in.UnexpectedForeign
	in.Altered = len(f.Altered)
	stored := ledger.ByRequestID(rows)

	for _, p := range phases {
		pr := newPhaseResult(p)
		var e2e, server []int64
		bySecond := map[int][]int64{}
		for _, a := range p.load.Accepted {
			rows := stored[a.ID]
			if len(rows) == 0 {
				pr.Lost++
				continue
			}
			d := rows[0].StoredAt.Sub(a.At)
			if d < 0 {
				pr.E2ENegative++
			}
			e2e = append(e2e, int64(d))
			sec := int(a.At.Sub(p.load.Start) / time.Second)
			bySecond[sec] = append(bySecond[sec], int64(d))
			server = append(server, int64(rows[0].StoredAt.Sub(rows[0].ReceivedAt)))
		}
		if !p.noE2E {
			l, s := summarize(e2e), summarize(server)
			pr.E2E, pr.ServerE2E = &l, &s
		}
		pr.RowsPerInsert = rowsPerInsert(p.load.Accepted, stored)
		if !p.noE2E {
			pr.E2ESeconds = perSecondP99(bySecond)
		}
		if p.warmup {
			b.res.Warmup = &pr
		} else {
			b.res.Phases = append(b.res.Phases, pr)
		}
	}
	b.res.Integrity = in

	if drain != nil {
		var first, last time.Time
		atLast, n := 0, 0
		for _, a := range drain.phase.load.Accepted {
			rows := stored[a.ID]
			if len(rows) == 0 {
				continue
			}
			t := rows[0].StoredAt
			n++
			if first.IsZero() || t.Before(first) {
				first = t
			}
			switch {
			case t.After(last):
				last, atLast = t, 1
			case t.Equal(last):
				atLast++
			}
		}
		d := &DrainResult{
			Method: "backlog: reports accepted while epro-mq was stopped; after its restart, rows/s between the first " +
				"and the last stored_at of the backlog (the rows of the last statement, whose end stored_at cannot show, " +
				"are left out); startup and group join are excluded and shown apart",
			Rows:           n,
			StartupSeconds: first.Sub(drain.restarted).Seconds(),
			WallSeconds:    drain.complete.Sub(drain.restarted).Seconds(),
			CPU:            b.res.DrainCPU,
		}
		if span := last.Sub(first); span > 0 {
			d.Seconds = span.Seconds()
			d.RowsPerSec = float64(n-atLast) / span.Seconds()
		}
		d.RowsPerInsert = rowsPerInsert(drain.phase.load.Accepted, stored)
		b.res.Drain = d
	}
	return nil
}

// perSecondP99 tells a short stall from steady queueing: one bad second among calm ones is a stall
// somewhere (a GC, an fsync, a busy neighbour); every second bad is a pipeline that cannot keep up.
func perSecondP99(bySecond map[int][]int64) *SecondsP99 {
	if len(bySecond) == 0 {
		return nil
	}
	var p99s []float64
	out := &SecondsP99{}
	for sec, ns := range bySecond {
		l := summarize(ns)
		p99s = append(p99s, l.P99)
		if l.P99 > out.WorstP99Ms {
			out.WorstP99Ms, out.WorstSecond = l.P99, sec
		}
	}
	slices.Sort(p99s)
	out.MedianP99Ms = p99s[(len(p99s)-1)/2]
	for _, v := range p99s {
		if v > targetE2EP99Ms {
			out.SecondsOver50Ms++
		}
	}
	out.Seconds = len(p99s)
	return out
}

// rowsPerInsert is the mean number of the given reports per INSERT statement. epro-mq stamps every row of a
// statement with the same stored_at, so distinct stored_at values count statements; rows per statement is
// what MariaDB's per-row cost and the fsync per commit depend on.
func rowsPerInsert(accepted []load.Answer, stored map[string][]ledger.Row) float64 {
	stmts := map[time.Time]bool{}
	rows := 0
	for _, a := range accepted {
		if r := stored[a.ID]; len(r) > 0 {
			stmts[r[0].StoredAt] = true
			rows++
		}
	}
	if len(stmts) == 0 {
		return 0
	}
	return float64(rows) / float64(len(stmts))
}
