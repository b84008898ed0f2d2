package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

func findTarget(t *testing.T, r *Result, prefix string) Target {
	t.Helper()
	for _, x := range r.Targets {
		if strings.HasPrefix(x.Name, prefix) {
			return x
		}
	}
	t.Fatalf("no target %q in %+v", prefix, r.Targets)
	return Target{}
}

// cpu10s is 10 s of CPU use with the given processes' percent of one core.
func cpu10s(procs map[string]float64) CPUUse {
	return CPUUse{Seconds: 10, HostCapacity: 200, HostPercent: 150, Procs: procs}
}

func stockRun() *Result {
	return &Result{
		Infra: "real",
		Phases: []PhaseResult{
			// 10,000 reports in 10 s; epro-api 50% of a core → 500 µs per report.
			{Name: "closed-64", Concurrency: 64, Accepted: 10_000, AcceptedPerSec: 1000, API: Latency{Count: 10_000, P99: 40},
				CPU: cpu10s(map[string]float64{"epro-api": 50, "kafka": 40})},
			{Name: "backlog", Concurrency: 64, Accepted: 5000, AcceptedPerSec: 3000, API: Latency{Count: 5000, P99: 5}},
			{Name: "stock-64", Concurrency: 64, Accepted: 20_000, AcceptedPerSec: 2000, API: Latency{Count: 20_000, P99: 80},
				CPU: cpu10s(map[string]float64{"stock-api": 80, "kafka": 20})},
		},
		// 20,000 reports; 12 s until the last arrival at 100% of a core → 600 µs per report.
		Stock: &StockResult{Phase: "stock-64", Topic: "t", Acknowledged: 20_000, RecordsAtLoadEnd: 9000, Records: 20_000,
			InKafka: 19_990, LastArrivalSeconds: 2.5, WaitedSeconds: 5.5,
			CPU: CPUUse{Seconds: 12, HostCapacity: 200, HostPercent: 120, Procs: map[string]float64{"stock-api": 100, "kafka": 10}}},
	}
}

func TestJudgeComparesWithTheStockAPI(t *testing.T) {
	r := stockRun()
	r.judge()

	acc := findTarget(t, r, "closed-64 accepted/s ÷ stock go-zero+kq accepted/s")
	if acc.Ratio == nil || *acc.Ratio != 0.5 || acc.Status != "MISS" || acc.Goal != "≥ 100%" {
		t.Errorf("accepted/s target: %+v", acc)
	}
	cpu := findTarget(t, r, "epro-api µs CPU/report ÷ stock API µs CPU/report")
	// 500 µs against 600 µs measured until the last arrival, not the 400 µs of the load's window.
	if cpu.Ratio == nil || *cpu.Ratio < 0.8333 || *cpu.Ratio > 0.8334 || cpu.Status != "PASS" || cpu.Goal != "< 100%" ||
		cpu.Measured != "500 µs ÷ 600 µs = 83%" {
		t.Errorf("CPU target: %+v", cpu)
	}
	p99 := findTarget(t, r, "closed-64 API p99 ÷ stock p99")
	if p99.Ratio == nil || *p99.Ratio != 0.5 || p99.Status != "PASS" || p99.Goal != "≤ 100%" {
		t.Errorf("p99 target: %+v", p99)
	}
	// The stock phase is not the suite's closed loop.
	raw := findTarget(t, r, "closed-64 accepted/s ÷ raw")
	if raw.Status != "n/a" {
		t.Errorf("raw target without a raw measurement: %+v", raw)
	}
}

func TestJudgeStockLimitsAreStrictWhereTheGoalSaysSo(t *testing.T) {
	r := stockRun()
	r.Phases[0].AcceptedPerSec = 2000                                            // as fast: ≥ holds
	r.Phases[0].CPU.Procs["epro-api"] = 72                                       // 720 µs of 600
	r.Stock.CPU.Procs["stock-api"], r.Stock.CPU.Seconds = 72, 20_000.0/10_000*10 // also 720 µs: < fails
	r.Phases[0].API.P99 = 80                                                     // equal: ≤ holds
	r.judge()
	for prefix, want := range map[string]string{
		"closed-64 accepted/s ÷ stock": "PASS",
		"epro-api µs CPU/report":       "MISS",
		"closed-64 API p99 ÷ stock":    "PASS",
	} {
		if got := findTarget(t, r, prefix); got.Status != want {
			t.Errorf("%s: %+v, want %s", prefix, got, want)
		}
	}
}

func TestJudgeWithoutTheStockPhase(t *testing.T) {
	r := stockRun()
	r.Phases = r.Phases[:2]
	r.Stock = &StockResult{Skipped: "-stock=false"}
	r.Infra = "embedded"
	r.judge()
	for _, prefix := range []string{"closed-64 accepted/s ÷ stock", "epro-api µs CPU/report", "closed-64 API p99 ÷ stock"} {
		if got := findTarget(t, r, prefix); got.Status != "n/a" || got.Measured != "not measured" || got.Ratio != nil {
			t.Errorf("%s without a stock phase: %+v", prefix, got)
		}
	}
	var out bytes.Buffer
	r.print(&out)
	if !strings.Contains(out.String(), "stock go-zero + go-queue API: not measured (-stock=false)") {
		t.Errorf("print says nothing of the skipped phase:\n%s", out.String())
	}
}

func TestPrintShowsWhatTheStockAPIAcknowledgedAndWhatReachedKafka(t *testing.T) {
	r := stockRun()
	r.judge()
	var out bytes.Buffer
	r.print(&out)
	s := out.String()
	for _, want := range []string{
		"acknowledged 20000, in Kafka 19990 after 2.5 s",
		"the topic held 9000 records of the phase; 20000 when the wait ended (5.5 s)",
		"µs CPU per report: stock-api 600 kafka 60; total 660",
		"500 µs ÷ 600 µs = 83%",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	if !strings.Contains(s, "stock-64") {
		t.Errorf("no stock-64 row:\n%s", s)
	}
}

// Kafka's CPU per report with the consumer live is held against the same with it stopped.
func TestJudgeKafkaLiveAgainstStopped(t *testing.T) {
	r := stockRun()
	r.judge()
	if k := findTarget(t, r, "kafka µs CPU/report, consumer live"); k.Status != "n/a" || k.Measured != "not measured" {
		t.Errorf("without the backlog's CPU: %+v", k)
	}
	r = stockRun()
	// 5,000 reports in 10 s at 10% of a core → 200 µs per report, against 400 µs live.
	r.Phases[1].CPU = cpu10s(map[string]float64{"kafka": 10, "epro-api": 90})
	r.judge()
	k := findTarget(t, r, "kafka µs CPU/report, consumer live (closed-64) ÷ stopped (backlog)")
	if k.Ratio == nil || *k.Ratio != 2 || k.Status != "MISS" || k.Goal != "≤ 150%" || k.Measured != "400 µs ÷ 200 µs = 200%" {
		t.Errorf("kafka target: %+v", k)
	}
}

// -baseline reads a previous run's JSON and holds this run's closed loop to twice its accepted/s and half
// its CPU per report, the load generator left out of both.
func TestJudgeAgainstABaseline(t *testing.T) {
	dir := t.TempDir()
	prev := &Result{RunID: "prev", Phases: []PhaseResult{
		{Name: "warm", Rate: 10, Accepted: 100, AcceptedPerSec: 10},
		// 4,000 reports in 10 s; epro-api and kafka 90% of a core → 2,250 µs per report; the generator's 30% left out.
		{Name: "closed-64", Concurrency: 64, Accepted: 4000, AcceptedPerSec: 400,
			CPU: cpu10s(map[string]float64{"epro-api": 50, "kafka": 40, generator: 30})},
	}}
	prevFile := filepath.Join(dir, "prev.json")
	if err := prev.writeJSON(prevFile); err != nil {
		t.Fatal(err)
	}
	b, err := readBaseline(prevFile)
	if err != nil {
		t.Fatal(err)
	}
	if b.RunID != "prev" || b.Phase != "closed-64" || b.AcceptedPerSec != 400 || b.SuiteMicros != 2250 {
		t.Fatalf("baseline = %+v", b)
	}

	r := stockRun() // 1,000/s; epro-api and kafka 90% of a core for 10,000 reports → 900 µs
	r.Baseline = b
	r.judge()
	acc := findTarget(t, r, "closed-64 accepted/s ÷ run prev")
	if acc.Ratio == nil || *acc.Ratio != 2.5 || acc.Status != "PASS" || acc.Goal != "≥ 200%" {
		t.Errorf("accepted/s against the baseline: %+v", acc)
	}
	cpu := findTarget(t, r, "closed-64 µs CPU/report, all but the load generator, ÷ run prev")
	if cpu.Ratio == nil || *cpu.Ratio != 0.4 || cpu.Status != "PASS" || cpu.Goal != "≤ 50%" || cpu.Measured != "900 µs ÷ 2250 µs = 40%" {
		t.Errorf("CPU against the baseline: %+v", cpu)
	}

	r = stockRun()
	r.judge()
	if acc := findTarget(t, r, "closed-64 accepted/s ÷ baseline run (-baseline)"); acc.Status != "n/a" {
		t.Errorf("without -baseline: %+v", acc)
	}

	empty := filepath.Join(dir, "empty.json")
	if err := (&Result{RunID: "empty"}).writeJSON(empty); err != nil {
		t.Fatal(err)
	}
	if _, err := readBaseline(empty); err == nil || !strings.Contains(err.Error(), "no closed-loop phase") {
		t.Errorf("a run without a closed loop: %v", err)
	}
	if _, err := readBaseline(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("a missing file was read")
	}
}
