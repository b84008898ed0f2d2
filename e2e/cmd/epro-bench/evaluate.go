package main

import (
	"context"
	"slices"
	"time"
)

// evaluate reads the stored rows and turns phases into results: end-to-end latency per accepted report,
// the drain rate and the integrity counts.
func (b *bench) evaluate(ctx context.Context, phases []*phaseRun, drain *drainRun) error {
	var stored map[string][]storedRow
	var err error
	if b.managed {
		stored, err = readAllRows(ctx, b.db)
	} else {
		var ids []string
		for _, p := range phases {
			for _, a := range p.load.accepted {
				ids = append(ids, a.id)
			}
			ids = append(ids, p.load.refused...)
		}
		stored, err = readRowsFor(ctx, b.db, ids)
	}
	if err != nil {
		return err
	}

	var in Integrity
	if b.managed {
		in.Scope = "every row of the benchmark's own database"
	} else {
		in.Scope = "rows of the ids this run sent; rows others wrote to the shared table are not looked at"
	}
	accepted := map[string]bool{}
	refused := map[string]bool{}
	for _, p := range phases {
		for _, a := range p.load.accepted {
			accepted[a.id] = true
		}
		for _, id := range p.load.refused {
			refused[id] = true
		}
	}
	for id, rows := range stored {
		in.Stored += len(rows)
		if len(rows) > 1 {
			in.Duplicated++
		}
		if !accepted[id] {
			if refused[id] {
				in.UnexpectedRefused++
			} else {
				in.UnexpectedForeign++
			}
		}
	}
	in.Accepted = len(accepted)
	in.Unexpected = in.UnexpectedRefused + in.UnexpectedForeign

	for _, p := range phases {
		pr := newPhaseResult(p)
		var e2e, server []int64
		bySecond := map[int][]int64{}
		for _, a := range p.load.accepted {
			rows := stored[a.id]
			if len(rows) == 0 {
				in.Lost++
				pr.Lost++
				continue
			}
			d := rows[0].storedAt.Sub(a.at)
			if d < 0 {
				pr.E2ENegative++
			}
			e2e = append(e2e, int64(d))
			sec := int(a.at.Sub(p.load.start) / time.Second)
			bySecond[sec] = append(bySecond[sec], int64(d))
			server = append(server, int64(rows[0].storedAt.Sub(rows[0].receivedAt)))
		}
		if !p.noE2E {
			l, s := summarize(e2e), summarize(server)
			pr.E2E, pr.ServerE2E = &l, &s
		}
		pr.RowsPerInsert = rowsPerInsert(p.load.accepted, stored)
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
		for _, a := range drain.phase.load.accepted {
			rows := stored[a.id]
			if len(rows) == 0 {
				continue
			}
			t := rows[0].storedAt
			n++
			switch {
			case first.IsZero() || t.Before(first):
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
		d.RowsPerInsert = rowsPerInsert(drain.phase.load.accepted, stored)
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
func rowsPerInsert(accepted []acceptedReport, stored map[string][]storedRow) float64 {
	stmts := map[time.Time]bool{}
	rows := 0
	for _, a := range accepted {
		if r := stored[a.id]; len(r) > 0 {
			stmts[r[0].storedAt] = true
			rows++
		}
	}
	if len(stmts) == 0 {
		return 0
	}
	return float64(rows) / float64(len(stmts))
}
