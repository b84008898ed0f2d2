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
	"strconv"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/epro-intake/e2e/internal/load"
	"github.com/epro-intake/e2e/internal/stack"
)

type bench struct {
	opt options
	log io.Writer
	res *Result
	cpu *cpuWatch

	managed  bool
	st       *stack.Stack // nil with -api
	mqCfg    string
	api, mq  *stack.Proc
	stock    *stack.Proc // the stock go-zero + go-queue API, during its phase
	devPorts map[string]int

	brokers []string
	server  *mysql.Config // DSN without a database
	dbName  string        // the reports database, created by the benchmark when managed
	topics  []string
	group   string
	apiBase string
	db      *sql.DB
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
	answers := load.NewAnswerSet(64, mrand.New(mrand.NewChaCha8(seed)))
	size, err := load.CheckGenerated(answers, o.patients)
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
	client := load.NewHTTPClient(max(o.concurrency, o.maxInflight, 8))
	postURL := b.apiBase + "/v1/reports"

	var phases []*phaseRun
	total := 0 // accepted so far; each is one row once drained
	// keep adds a finished phase and waits until the consumer has stored everything accepted so far.
	keep := func(pr *phaseRun) error {
		phases = append(phases, pr)
		total += len(pr.load.Accepted)
		what := pr.load.Spec.Name
		n, _, err := waitRows(ctx, b.db, b.since, total, 250*time.Millisecond, 20*time.Second, o.drainTimeout)
		if err != nil {
			return fmt.Errorf("waiting for the consumer after %s: %w%s", what, err, b.logHint())
		}
		b.progress("%s: consumer has stored %d rows", what, n)
		return nil
	}

	if o.warmup > 0 {
		b.progress("warm-up: %d reports on 8 connections", o.warmup)
		spec := load.Spec{Name: "warm-up", Concurrency: 8, N: o.warmup, Duration: time.Minute, Tokens: b.st.Tokens}
		lr := load.Run(ctx, client, postURL, load.Fresh{Answers: answers, Patients: o.patients}, spec)
		if len(lr.Accepted) == 0 {
			return nil, fmt.Errorf("warm-up: no 202 in %d requests (statuses %v, %d connection errors)%s", lr.Sent, lr.Codes, lr.NetErrs, b.logHint())
		}
		if err := keep(&phaseRun{load: lr, warmup: true}); err != nil {
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
		spec := load.Spec{Name: fmt.Sprintf("closed-%d", o.concurrency), Concurrency: o.concurrency, Duration: o.duration, N: o.n}
		if err := keep(b.phase(ctx, client, postURL, answers, spec, o.profile != "")); err != nil {
			return nil, err
		}
	}
	if o.rate > 0 {
		spec := load.Spec{Name: fmt.Sprintf("rate-%s", strconv.FormatFloat(o.rate, 'f', -1, 64)), Rate: o.rate,
			MaxInflight: o.maxInflight, Duration: o.rateDuration, N: o.rateN}
		if err := keep(b.phase(ctx, client, postURL, answers, spec, false)); err != nil {
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
		total += len(d.phase.load.Accepted)
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

	// Last, so that nothing before it runs without the suite.
	switch {
	case !o.stock:
		b.res.Stock = &StockResult{Skipped: "-stock=false"}
	case !b.managed:
		b.res.Stock = &StockResult{Skipped: "the services of an already running suite cannot be stopped from here"}
	case o.concurrency == 0:
		b.res.Stock = &StockResult{Skipped: "no closed-loop phase to compare it with"}
	default:
		pr, err := b.stockPhase(ctx, client, answers)
		if err != nil {
			// The suite's figures stand without the baseline: they are printed, and the run fails.
			b.res.Stock = &StockResult{Skipped: "failed (the error follows the figures)"}
			b.res.judge()
			return b.res, fmt.Errorf("stock phase: %w", err)
		}
		p := newPhaseResult(pr)
		p.Load += " (stock go-zero + go-queue API alone: epro-api and epro-mq stopped)"
		b.res.Phases = append(b.res.Phases, p)
	}
	b.res.judge()
	failed = false
	return b.res, nil
}

// phaseRun is one load phase and what the machine did meanwhile.
type phaseRun struct {
	load   *load.Result
	cpu    CPUUse
	warmup bool
	// noE2E: the consumer was stopped during the phase, so 202-to-row times measure the stop.
	noE2E bool
}

func (b *bench) phase(ctx context.Context, client *http.Client, postURL string, answers load.AnswerSet, spec load.Spec, profile bool) *phaseRun {
	b.progress("%s: %s", spec.Name, spec.Describe())
	spec.Tokens = b.st.Tokens // each patient's token is minted once, mostly during the warm-up
	var wg sync.WaitGroup
	if profile {
		wg.Go(func() {
			b.captureProfiles(ctx, spec.Duration)
		})
	}
	before := b.cpu.sample()
	lr := load.Run(ctx, client, postURL, load.Fresh{Answers: answers, Patients: b.opt.patients}, spec)
	after := b.cpu.sample()
	wg.Wait()
	b.progress("%s: %d sent, %d accepted in %.1fs", spec.Name, lr.Sent, len(lr.Accepted), lr.Elapsed.Seconds())
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
	for name := range b.devPorts {
		wg.Go(func() { b.serviceProfile(ctx, name, name+".cpu.pprof", secs) })
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

// serviceProfile writes a CPU profile of secs seconds of service, taken through its dev server, to file in
// the profile directory.
func (b *bench) serviceProfile(ctx context.Context, service, file string, secs int) {
	u := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", b.devPorts[service], secs)
	if err := download(ctx, u, filepath.Join(b.opt.profile, file), time.Duration(secs+10)*time.Second); err != nil {
		b.progress("profile %s: %v", file, err)
	}
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

func newRunID() string {
	var r [3]byte
	_, _ = rand.Read(r[:])
	return time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(r[:])
}

func machine() string {
	return fmt.Sprintf("%d CPUs, %s/%s, %s", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
}
