package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/epro-intake/common/topic"
	"github.com/epro-intake/e2e/internal/stack"
)

type bench struct {
	opt options
	log io.Writer
	res *Result
	cpu *cpuWatch

	managed  bool
	root     string
	st       *stack.Stack // nil with -api
	mqCfg    string
	apiCfg   string
	api, mq  *stack.Proc
	devPorts map[string]int

	brokers   []string
	server    *mysql.Config // DSN without a database
	dbName    string        // the reports database, created by the benchmark when managed
	rawDBName string
	topics    []string
	group     string
	apiBase   string
	db        *sql.DB
	// since limits row counts to this run on a database others use as well (-api); zero when the database
	// is the benchmark's own.
	since time.Time

	cleanups []func()
}

func (b *bench) progress(format string, args ...any) { progress(b.log, format, args...) }

func (b *bench) run(ctx context.Context) (*Result, error) {
	o := b.opt
	b.res = newResult(o)
	b.cpu = newCPUWatch()
	failed := true
	defer func() { b.cleanup(failed) }()

	var seed [32]byte
	_, _ = rand.Read(seed[:])
	answers := newAnswerSet(64, mrand.New(mrand.NewChaCha8(seed)))
	size, err := checkGenerated(answers, o.patients)
	if err != nil {
		return nil, err
	}
	b.res.ReportBytes = size

	if o.apiURL != "" {
		if len(o.overrides) > 0 {
			return nil, errors.New("-set changes the configs of a suite epro-bench starts; it does not combine with -api")
		}
		err = b.attach(ctx)
	} else {
		err = b.startSuite(ctx)
	}
	if err != nil {
		return nil, err
	}
	client := newHTTPClient(max(o.concurrency, o.maxInflight, 8))
	postURL := b.apiBase + "/v1/reports"

	var phases []*phaseRun
	total := 0 // accepted so far; each is one row once drained
	drained := func(what string) error {
		want := total
		n, _, err := waitRows(ctx, b.db, b.since, want, 250*time.Millisecond, 20*time.Second, o.drainTimeout)
		if err != nil {
			return fmt.Errorf("waiting for the consumer after %s: %w%s", what, err, b.logHint())
		}
		b.progress("%s: consumer has stored %d rows", what, n)
		return nil
	}

	if o.warmup > 0 {
		b.progress("warm-up: %d reports on 8 connections", o.warmup)
		spec := loadSpec{name: "warm-up", concurrency: 8, n: o.warmup, duration: time.Minute}
		lr := runLoad(ctx, client, postURL, answers, o.patients, spec)
		phases = append(phases, &phaseRun{load: lr, warmup: true})
		total += len(lr.accepted)
		if len(lr.accepted) == 0 {
			return nil, fmt.Errorf("warm-up: no 202 in %d requests (statuses %v, %d connection errors)%s", lr.sent, lr.codes, lr.netErrs, b.logHint())
		}
		if err := drained("warm-up"); err != nil {
			return nil, err
		}
	}

	// The raw Writer goes first, while the suite is idle, on the same broker and the same partition count.
	if o.rawDuration > 0 {
		if err := b.rawKafka(ctx, answers); err != nil {
			return nil, err
		}
	}

	if o.concurrency > 0 {
		spec := loadSpec{name: fmt.Sprintf("closed-%d", o.concurrency), concurrency: o.concurrency, duration: o.duration, n: o.n}
		pr := b.phase(ctx, client, postURL, answers, spec, o.profile != "")
		phases = append(phases, pr)
		total += len(pr.load.accepted)
		if err := drained(spec.name); err != nil {
			return nil, err
		}
	}
	if o.rate > 0 {
		spec := loadSpec{name: fmt.Sprintf("rate-%s", strconv.FormatFloat(o.rate, 'f', -1, 64)), rate: o.rate,
			maxInflight: o.maxInflight, duration: o.rateDuration, n: o.rateN}
		pr := b.phase(ctx, client, postURL, answers, spec, false)
		phases = append(phases, pr)
		total += len(pr.load.accepted)
		if err := drained(spec.name); err != nil {
			return nil, err
		}
	}

	var drain *drainRun
	switch {
	case o.backlog == 0:
		b.res.Drain = &DrainResult{Skipped: "-backlog 0"}
	case !b.managed:
		b.res.Drain = &DrainResult{Skipped: "the consumer of an already running suite cannot be stopped from here"}
	default:
		d, err := b.backlogDrain(ctx, client, postURL, answers, total)
		if err != nil {
			return nil, err
		}
		drain = d
		phases = append(phases, d.phase)
		total += len(d.phase.load.accepted)
	}

	b.progress("reading back stored rows")
	if err := b.evaluate(ctx, phases, drain); err != nil {
		return nil, err
	}

	if len(o.rawBatches) > 0 {
		if err := b.rawMySQL(ctx); err != nil {
			return nil, err
		}
	}
	b.res.judge()
	failed = false
	return b.res, nil
}

// phaseRun is one load phase and what the machine did meanwhile.
type phaseRun struct {
	load   *loadResult
	cpu    CPUUse
	warmup bool
	// noE2E: the consumer was stopped during the phase, so 202-to-row times measure the stop.
	noE2E bool
}

func (b *bench) phase(ctx context.Context, client *http.Client, postURL string, answers answerSet, spec loadSpec, profile bool) *phaseRun {
	b.progress("%s: %s", spec.name, spec.describe())
	var wg sync.WaitGroup
	if profile {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.captureProfiles(ctx, spec.duration)
		}()
	}
	before := b.cpu.sample()
	lr := runLoad(ctx, client, postURL, answers, b.opt.patients, spec)
	after := b.cpu.sample()
	wg.Wait()
	b.progress("%s: %d sent, %d accepted in %.1fs", spec.name, lr.sent, len(lr.accepted), lr.elapsed.Seconds())
	return &phaseRun{load: lr, cpu: cpuUse(before, after)}
}

// captureProfiles takes CPU profiles of both services (through go-zero's dev server) and of the generator
// over the middle of a phase.
func (b *bench) captureProfiles(ctx context.Context, phase time.Duration) {
	secs := int(min(phase-4*time.Second, 15*time.Second) / time.Second)
	if secs < 1 {
		b.progress("profile: the phase is too short to profile")
		return
	}
	if err := os.MkdirAll(b.opt.profile, 0o755); err != nil {
		b.progress("profile: %v", err)
		return
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(2 * time.Second):
	}
	var wg sync.WaitGroup
	for name, port := range b.devPorts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", port, secs)
			path := filepath.Join(b.opt.profile, name+".cpu.pprof")
			if err := download(ctx, u, path, time.Duration(secs+10)*time.Second); err != nil {
				b.progress("profile %s: %v", name, err)
			}
		}()
	}
	if f, err := os.Create(filepath.Join(b.opt.profile, "epro-bench.cpu.pprof")); err == nil {
		if pprof.StartCPUProfile(f) == nil {
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(secs) * time.Second):
			}
			pprof.StopCPUProfile()
		}
		f.Close()
	}
	wg.Wait()
	b.progress("profile: %ds CPU profiles in %s (go tool pprof -top <file>)", secs, b.opt.profile)
}

func download(ctx context.Context, u, path string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, resp.Body)
	return errors.Join(err, f.Close())
}

// drainRun is the backlog measurement: reports accepted while epro-mq was stopped, then stored after it
// started again.
type drainRun struct {
	phase     *phaseRun
	restarted time.Time
	complete  time.Time // the poll that first saw every row
}

func (b *bench) backlogDrain(ctx context.Context, client *http.Client, postURL string, answers answerSet, total int) (*drainRun, error) {
	o := b.opt
	b.progress("drain: stopping epro-mq")
	if err := stopService(b.mq); err != nil {
		return nil, err
	}
	stoppedAt, err := rowCount(ctx, b.db, b.since)
	if err != nil {
		return nil, err
	}
	spec := loadSpec{name: "backlog", concurrency: max(o.concurrency, 64), n: o.backlog, duration: maxPhaseDuration}
	pr := b.phase(ctx, client, postURL, answers, spec, false)
	pr.noE2E = true
	// At least every report accepted so far; more if some that were refused got stored anyway.
	want := max(total, stoppedAt) + len(pr.load.accepted)
	if n, err := rowCount(ctx, b.db, b.since); err != nil || n != stoppedAt {
		return nil, fmt.Errorf("drain: rows went from %d to %d while epro-mq was stopped (%v)", stoppedAt, n, err)
	}
	b.progress("drain: starting epro-mq on a backlog of %d reports", len(pr.load.accepted))
	restarted := time.Now()
	if err := b.startMQ(); err != nil {
		return nil, err
	}
	var profiled sync.WaitGroup
	if port, ok := b.devPorts["epro-mq"]; ok {
		// The drain is short: a few seconds from just after the restart show what bounds it.
		profiled.Add(1)
		go func() {
			defer profiled.Done()
			time.Sleep(500 * time.Millisecond)
			u := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=3", port)
			path := filepath.Join(b.opt.profile, "epro-mq.drain.cpu.pprof")
			if err := download(ctx, u, path, 15*time.Second); err != nil {
				b.progress("profile epro-mq drain: %v", err)
			}
		}()
	}
	before := b.cpu.sample()
	// A slow poll: COUNT(*) scans an index, and a fast one would take MariaDB time from the drain it measures.
	n, complete, err := waitRows(ctx, b.db, b.since, want, 500*time.Millisecond, 30*time.Second, o.drainTimeout)
	after := b.cpu.sample()
	profiled.Wait()
	if err != nil {
		return nil, fmt.Errorf("drain: %w%s", err, b.logHint())
	}
	b.res.DrainCPU = cpuUse(before, after)
	b.progress("drain: %d rows stored %.1fs after the restart", n, complete.Sub(restarted).Seconds())
	return &drainRun{phase: pr, restarted: restarted, complete: complete}, nil
}

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

func (b *bench) rawKafka(ctx context.Context, answers answerSet) error {
	o := b.opt
	name := "epro.bench." + b.res.RunID + ".raw"
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := topic.Ensure(tctx, b.brokers, topic.Spec{Name: name, Partitions: o.partitions, Replication: 1})
	cancel()
	if err != nil {
		return fmt.Errorf("raw kafka topic: %w", err)
	}
	b.topics = append(b.topics, name)
	msgs, size, err := rawMessages(answers, o.patients, 1024)
	if err != nil {
		return err
	}
	b.progress("raw kafka-go Writer: %d goroutines for %s", o.rawWriters, o.rawDuration)
	before := b.cpu.sample()
	rk, err := runRawKafka(ctx, b.brokers, name, o.rawWriters, o.rawDuration, msgs, size)
	after := b.cpu.sample()
	if err != nil {
		return err
	}
	rk.CPU = cpuUse(before, after)
	b.res.RawKafka = &rk
	b.progress("raw kafka-go Writer: %.0f msgs/s", rk.MsgsPerSec)
	return nil
}

func (b *bench) rawMySQL(ctx context.Context) error {
	o := b.opt
	rows, err := readRawRows(ctx, b.db, o.rawRows)
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		return errors.New("raw insert: no stored rows to copy")
	}
	// A name of this run's own, also with -api, where the reports database is someone else's.
	b.rawDBName = "epro_bench_" + strings.ReplaceAll(b.res.RunID, "-", "_") + "_raw"

	if err := createDatabase(ctx, b.server, b.rawDBName); err != nil {
		return err
	}
	b.cleanups = append(b.cleanups, func() {
		if !b.opt.keep {
			_ = dropDatabase(b.server, b.rawDBName)
		}
	})
	schema, err := migrationUp(b.root)
	if err != nil {
		return err
	}
	cfg := withDB(b.server, b.rawDBName)
	if err := applySchema(ctx, cfg, schema); err != nil {
		return err
	}
	db, err := openDB(cfg, o.rawConns)
	if err != nil {
		return err
	}
	defer db.Close()
	for _, per := range o.rawBatches {
		b.progress("raw INSERT: %d rows, %d per statement, %d connections", len(rows), per, o.rawConns)
		before := b.cpu.sample()
		rm, err := runRawMySQL(ctx, db, rows, per, o.rawConns)
		after := b.cpu.sample()
		if err != nil {
			return fmt.Errorf("raw insert: %w", err)
		}
		rm.CPU = cpuUse(before, after)
		b.res.RawMySQL = append(b.res.RawMySQL, rm)
		b.progress("raw INSERT: %.0f rows/s", rm.RowsPerSec)
	}
	return nil
}

func newRunID() string {
	var r [3]byte
	_, _ = rand.Read(r[:])
	return time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(r[:])
}

func machine() string {
	return fmt.Sprintf("%d CPUs, %s/%s, %s", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
}
