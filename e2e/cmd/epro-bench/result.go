package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Targets the suite is held to.
const (
	targetProduceRatio = 0.50 // accepted/s of the closed loop ÷ raw Writer msgs/s
	targetDrainRatio   = 0.75 // drain rows/s ÷ raw INSERT rows/s
	targetE2EP99Ms     = 50.0 // open loop at 1000/s
	targetAPIP99Ms     = 10.0
	// Against the stock go-zero + go-queue API on the same machine in the same run: at least its accepted/s,
	// less CPU per report, a p99 no worse, while keeping acks=all before the 2xx.
	targetStockAccepted = 1.0 // closed loop accepted/s ÷ stock accepted/s, at least
	targetStockCPU      = 1.0 // epro-api µs CPU per report ÷ stock API's, below
	targetStockP99      = 1.0 // closed loop API p99 ÷ stock API p99, at most
	// Kafka's CPU per report while epro-mq consumes live, ÷ the same with epro-mq stopped (the backlog
	// phase): the consumer's fetches may cost Kafka at most half again what producing does.
	targetKafkaLive = 1.5
	// Against a previous run (-baseline): at least twice its closed-loop accepted/s, at most half its CPU per
	// report (every process but the load generator).
	targetBaselineAccepted = 2.0
	targetBaselineCPU      = 0.5
)

// generator is the load generator's name in the CPU figures; it is left out of the suite's CPU per report.
const generator = "epro-bench"

// Result is everything one run measured; -out writes it as JSON.
type Result struct {
	RunID     string    `json:"runId"`
	StartedAt time.Time `json:"startedAt"`
	// Infra is "real", "embedded" or "external" (an API that was already running).
	Infra string `json:"infra"`
	// Meaningful is false on the embedded stand-ins: in-memory servers say nothing about real throughput.
	Meaningful  bool           `json:"meaningful"`
	Target      string         `json:"target"`
	Machine     string         `json:"machine"`
	Options     map[string]any `json:"options"`
	ReportBytes int            `json:"reportBytes"`
	// Overrides are the -set changes to the services' own configs; empty means the configs as committed.
	Overrides map[string]map[string]any `json:"overrides,omitempty"`
	// Baseline is the previous run -baseline named, if any.
	Baseline *Baseline `json:"baseline,omitempty"`

	Warmup    *PhaseResult  `json:"warmup,omitempty"`
	Phases    []PhaseResult `json:"phases"`
	Drain     *DrainResult  `json:"drain,omitempty"`
	DrainCPU  CPUUse        `json:"-"`
	RawKafka  *RawKafka     `json:"rawKafka,omitempty"`
	RawMySQL  []RawMySQL    `json:"rawMySQL,omitempty"`
	Stock     *StockResult  `json:"stock,omitempty"`
	Integrity Integrity     `json:"integrity"`
	Targets   []Target      `json:"targets"`
}

// Baseline is what a previous run measured in its first closed-loop phase, read from its -out JSON.
type Baseline struct {
	File           string  `json:"file"`
	RunID          string  `json:"runId"`
	Phase          string  `json:"phase"`
	AcceptedPerSec float64 `json:"acceptedPerSec"`
	// SuiteMicros is CPU µs per accepted report of every process but the load generator.
	SuiteMicros float64 `json:"suiteMicrosPerReport"`
}

// readBaseline reads the first closed-loop phase of the run whose -out JSON is file.
func readBaseline(file string) (*Baseline, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	var prev Result
	if err := json.Unmarshal(data, &prev); err != nil {
		return nil, fmt.Errorf("baseline %s: %w", file, err)
	}
	if closed, _, _ := prev.phases(); closed != nil && closed.Accepted > 0 {
		return &Baseline{File: file, RunID: prev.RunID, Phase: closed.Name, AcceptedPerSec: closed.AcceptedPerSec,
			SuiteMicros: closed.CPU.suiteMicros(closed.Accepted)}, nil
	}
	return nil, fmt.Errorf("baseline %s: no closed-loop phase with accepted reports", file)
}

// phases returns the run's first closed-loop and open-loop phases of the suite (not the backlog's) and the
// stock API's phase, each nil when the run had none.
func (r *Result) phases() (closed, open, stock *PhaseResult) {
	for i := range r.Phases {
		p := &r.Phases[i]
		if r.Stock != nil && r.Stock.Skipped == "" && p.Name == r.Stock.Phase {
			stock = p
			continue
		}
		if p.Name == "backlog" {
			continue
		}
		if p.Rate > 0 && open == nil {
			open = p
		}
		if p.Concurrency > 0 && closed == nil {
			closed = p
		}
	}
	return closed, open, stock
}

// PhaseResult is one load phase.
type PhaseResult struct {
	Name           string         `json:"name"`
	Load           string         `json:"load"`
	Concurrency    int            `json:"concurrency,omitempty"`
	Rate           float64        `json:"rate,omitempty"`
	Sent           int            `json:"sent"`
	Accepted       int            `json:"accepted"`
	Statuses       map[string]int `json:"statuses"`
	ConnErrors     int            `json:"connErrors"`
	ConnErrorKinds map[string]int `json:"connErrorKinds,omitempty"`
	LateStarts     int            `json:"lateStarts,omitempty"`
	Seconds        float64        `json:"seconds"`
	AcceptedPerSec float64        `json:"acceptedPerSec"`
	// API is request latency as the client saw it; in the open loop it counts from the scheduled time.
	API Latency `json:"api"`
	// APIFromSend counts from the moment the request was actually sent; it differs from API only in the open
	// loop, by the generator's own lateness.
	APIFromSend Latency `json:"apiFromSend"`
	// E2E is from the client's 202 to the row's stored_at (same host clock). It can be negative: epro-mq may
	// store a report before the client has read its 202.
	E2E         *Latency `json:"e2e,omitempty"`
	E2ENegative int      `json:"e2eNegative,omitempty"`
	// ServerE2E is from the API's received_at to stored_at, both server clocks.
	ServerE2E *Latency `json:"serverE2e,omitempty"`
	Lost      int      `json:"lost"`
	// E2ESeconds is the end-to-end p99 of each second of the phase, summarised.
	E2ESeconds *SecondsP99 `json:"e2eSeconds,omitempty"`
	// RowsPerInsert is the mean rows per INSERT epro-mq wrote for this phase's reports.
	RowsPerInsert float64 `json:"rowsPerInsert"`
	CPU           CPUUse  `json:"cpu"`
}

// SecondsP99 summarises per-second end-to-end p99s (seconds counted by when the 202 arrived).
type SecondsP99 struct {
	Seconds         int     `json:"seconds"`
	MedianP99Ms     float64 `json:"medianP99Ms"`
	WorstP99Ms      float64 `json:"worstP99Ms"`
	WorstSecond     int     `json:"worstSecond"`
	SecondsOver50Ms int     `json:"secondsOver50Ms"`
}

// DrainResult is the consumer's storing rate on a backlog.
type DrainResult struct {
	Skipped        string  `json:"skipped,omitempty"`
	Method         string  `json:"method,omitempty"`
	Rows           int     `json:"rows,omitempty"`
	Seconds        float64 `json:"seconds,omitempty"`
	RowsPerSec     float64 `json:"rowsPerSec,omitempty"`
	StartupSeconds float64 `json:"startupSeconds,omitempty"`
	WallSeconds    float64 `json:"wallSeconds,omitempty"`
	RowsPerInsert  float64 `json:"rowsPerInsert,omitempty"`
	CPU            CPUUse  `json:"cpu"`
}

// Integrity compares the 202s with the rows.
type Integrity struct {
	Scope    string `json:"scope"`
	Accepted int    `json:"accepted"`
	Stored   int    `json:"stored"`
	// Lost: a 202 without a row.
	Lost int `json:"lost"`
	// Duplicated: request ids with more than one row.
	Duplicated int `json:"duplicated"`
	// Unexpected: rows whose id never got a 202. UnexpectedRefused were sent and answered otherwise (a
	// timeout after Kafka had taken them is allowed: the client's retry dedupes); UnexpectedForeign were never
	// sent at all.
	Unexpected        int `json:"unexpected"`
	UnexpectedRefused int `json:"unexpectedRefused"`
	UnexpectedForeign int `json:"unexpectedForeign"`
	// Altered: rows whose patient is not the one the report was sent for.
	Altered int `json:"altered"`
}

// Target is one goal and whether this run met it.
type Target struct {
	Name     string   `json:"name"`
	Measured string   `json:"measured"`
	Ratio    *float64 `json:"ratio,omitempty"`
	Goal     string   `json:"goal"`
	// Status is PASS, MISS, or n/a when the run did not measure it.
	Status string `json:"status"`
}

func newResult(o options) *Result {
	return &Result{
		RunID:     newRunID(),
		StartedAt: time.Now().UTC(),
		Machine:   machine(),
		Options: map[string]any{
			"concurrency": o.concurrency, "rate": o.rate, "duration": o.duration.String(), "n": o.n,
			"rateDuration": o.rateDuration.String(), "rateN": o.rateN, "maxInflight": o.maxInflight,
			"patients": o.patients, "partitions": o.partitions, "backlog": o.backlog, "warmup": o.warmup,
			"rawDuration": o.rawDuration.String(), "rawWriters": o.rawWriters, "rawBatch": o.rawBatches,
			"rawConns": o.rawConns, "rawRows": o.rawRows, "stock": o.stock,
		},
		Overrides: o.overrides,
		Baseline:  o.baselineRun,
	}
}

func newPhaseResult(p *phaseRun) PhaseResult {
	lr := p.load
	pr := PhaseResult{
		Name: lr.Spec.Name, Load: lr.Spec.Describe(), Concurrency: lr.Spec.Concurrency, Rate: lr.Spec.Rate,
		Sent: lr.Sent, Accepted: len(lr.Accepted), Statuses: map[string]int{}, ConnErrors: lr.NetErrs, ConnErrorKinds: lr.ErrKinds,
		LateStarts: lr.Late, Seconds: lr.Elapsed.Seconds(), AcceptedPerSec: perSecond(len(lr.Accepted), lr.Elapsed),
		API: summarize(lr.Lat), APIFromSend: summarize(lr.SendLat), CPU: p.cpu,
	}
	if p.noE2E {
		pr.Load += " (epro-mq stopped)"
	}
	for c, n := range lr.Codes {
		pr.Statuses[strconv.Itoa(c)] = n
	}
	return pr
}

// judge fills Targets from the figures.
func (r *Result) judge() {
	r.Meaningful = r.Infra != "embedded"
	// ratioOp is num ÷ den held to goal by op: "≥", "≤" or "<".
	ratioOp := func(name string, num, den float64, numText, denText, op string, goal float64) Target {
		t := Target{Name: name, Goal: fmt.Sprintf("%s %.0f%%", op, goal*100), Status: "n/a"}
		if num <= 0 || den <= 0 {
			t.Measured = "not measured"
			return t
		}
		v := num / den
		t.Ratio = &v
		t.Measured = fmt.Sprintf("%s ÷ %s = %.0f%%", numText, denText, v*100)
		switch op {
		case "≥":
			t.Status = passMiss(v >= goal)
		case "≤":
			t.Status = passMiss(v <= goal)
		default:
			t.Status = passMiss(v < goal)
		}
		return t
	}
	ratio := func(name string, num, den float64, numText, denText string, goal float64) Target {
		return ratioOp(name, num, den, numText, denText, "≥", goal)
	}

	closed, open, stock := r.phases()
	name, acc, raw := "accepted/s ÷ raw kafka-go Writer msgs/s", 0.0, 0.0
	if closed != nil {
		name, acc = closed.Name+" "+name, closed.AcceptedPerSec
	}
	if r.RawKafka != nil {
		raw = r.RawKafka.MsgsPerSec
	}
	r.Targets = append(r.Targets, ratio(name, acc, raw, fmtRate(acc)+"/s", fmtRate(raw)+"/s", targetProduceRatio))

	drain, best, bestText := 0.0, 0.0, ""
	if r.Drain != nil {
		drain = r.Drain.RowsPerSec
	}
	for _, m := range r.RawMySQL {
		if m.RowsPerSec > best {
			best = m.RowsPerSec
			bestText = fmt.Sprintf("%s/s (%d rows/stmt)", fmtRate(best), m.RowsPerStatement)
		}
	}
	r.Targets = append(r.Targets, ratio("drain rows/s ÷ raw INSERT rows/s (best statement size)", drain, best,
		fmtRate(drain)+"/s", bestText, targetDrainRatio))

	limit := func(name string, v float64, ok bool, goal float64) Target {
		t := Target{Name: name, Goal: fmt.Sprintf("≤ %.0f ms", goal), Status: "n/a", Measured: "not measured"}
		if ok {
			t.Measured = fmt.Sprintf("%.1f ms", v)
			t.Status = passMiss(v <= goal)
		}
		return t
	}
	openName, e2e, apiP99, haveE2E, haveAPI := "rate 1000/s", 0.0, 0.0, false, false
	if open != nil {
		openName, apiP99, haveAPI = open.Name, open.API.P99, open.API.Count > 0
		if open.E2E != nil && open.E2E.Count > 0 {
			e2e, haveE2E = open.E2E.P99, true
		}
	}
	r.Targets = append(r.Targets,
		limit(openName+" end-to-end p99 (202 → stored_at)", e2e, haveE2E, targetE2EP99Ms),
		limit(openName+" API p99 (from scheduled send)", apiP99, haveAPI, targetAPIP99Ms))

	// The stock API: its accepted/s and p99 from its phase; its CPU per report until its last record reached
	// Kafka, since it answers before it writes.
	closedName, stockAcc, stockP99, stockCPU, closedP99, apiCPU := "closed loop", 0.0, 0.0, 0.0, 0.0, 0.0
	if closed != nil {
		closedName, closedP99, apiCPU = closed.Name, closed.API.P99, closed.CPU.micros("epro-api", closed.Accepted)
	}
	if stock != nil {
		stockAcc, stockP99 = stock.AcceptedPerSec, stock.API.P99
		stockCPU = r.Stock.CPU.micros("stock-api", r.Stock.Acknowledged)
	}
	r.Targets = append(r.Targets,
		ratioOp(closedName+" accepted/s ÷ stock go-zero+kq accepted/s", acc, stockAcc,
			fmtRate(acc)+"/s", fmtRate(stockAcc)+"/s", "≥", targetStockAccepted),
		ratioOp("epro-api µs CPU/report ÷ stock API µs CPU/report", apiCPU, stockCPU,
			fmt.Sprintf("%.0f µs", apiCPU), fmt.Sprintf("%.0f µs", stockCPU), "<", targetStockCPU),
		ratioOp(closedName+" API p99 ÷ stock p99", closedP99, stockP99,
			fmtMs(closedP99)+" ms", fmtMs(stockP99)+" ms", "≤", targetStockP99))

	// Kafka's CPU per report with the consumer live (the closed loop) and stopped (the backlog phase).
	liveKafka, stoppedKafka := 0.0, 0.0
	if closed != nil {
		liveKafka = closed.CPU.micros("kafka", closed.Accepted)
	}
	for i := range r.Phases {
		if p := &r.Phases[i]; p.Name == "backlog" {
			stoppedKafka = p.CPU.micros("kafka", p.Accepted)
		}
	}
	r.Targets = append(r.Targets, ratioOp("kafka µs CPU/report, consumer live ("+closedName+") ÷ stopped (backlog)",
		liveKafka, stoppedKafka, fmt.Sprintf("%.0f µs", liveKafka), fmt.Sprintf("%.0f µs", stoppedKafka), "≤", targetKafkaLive))

	// A previous run: accepted/s and the suite's CPU per report (the load generator left out).
	suiteCPU, baseAcc, baseCPU, baseName := 0.0, 0.0, 0.0, "baseline run (-baseline)"
	if closed != nil {
		suiteCPU = closed.CPU.suiteMicros(closed.Accepted)
	}
	if b := r.Baseline; b != nil {
		baseAcc, baseCPU, baseName = b.AcceptedPerSec, b.SuiteMicros, "run "+b.RunID
	}
	r.Targets = append(r.Targets,
		ratioOp(closedName+" accepted/s ÷ "+baseName, acc, baseAcc, fmtRate(acc)+"/s", fmtRate(baseAcc)+"/s", "≥", targetBaselineAccepted),
		ratioOp(closedName+" µs CPU/report, all but the load generator, ÷ "+baseName, suiteCPU, baseCPU,
			fmt.Sprintf("%.0f µs", suiteCPU), fmt.Sprintf("%.0f µs", baseCPU), "≤", targetBaselineCPU))

	in := r.Integrity
	r.Targets = append(r.Targets, Target{
		Name:     "lost / duplicated / never-sent rows",
		Measured: fmt.Sprintf("%d / %d / %d", in.Lost, in.Duplicated, in.UnexpectedForeign),
		Goal:     "0 / 0 / 0",
		Status:   passMiss(in.Lost == 0 && in.Duplicated == 0 && in.UnexpectedForeign == 0 && in.Altered == 0),
	})
	if !r.Meaningful {
		for i := range r.Targets {
			if r.Targets[i].Status != "n/a" {
				r.Targets[i].Status += " (embedded: not meaningful)"
			}
		}
	}
}

func passMiss(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

func fmtRate(v float64) string {
	switch {
	case v >= 10000:
		return fmt.Sprintf("%.1fk", v/1000)
	case v >= 1000:
		return fmt.Sprintf("%.2fk", v/1000)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

func (r *Result) print(w io.Writer) {
	fmt.Fprintf(w, "\nepro-bench %s on %s infrastructure: %s\n", r.RunID, r.Infra, r.Target)
	if r.Infra == "embedded" {
		fmt.Fprintln(w, "!! EMBEDDED stand-ins (kfake, go-mysql-server, miniredis): these figures are NOT meaningful;")
		fmt.Fprintln(w, "!! they only show that the benchmark runs. Measure on real servers: make bench.")
	}
	fmt.Fprintf(w, "machine: %s; report body ≈ %d bytes; %v patients; %v partitions\n",
		r.Machine, r.ReportBytes, r.Options["patients"], r.Options["partitions"])
	if len(r.Overrides) == 0 {
		fmt.Fprintln(w, "service configs: epro-api/etc/epro-api.yaml and epro-mq/etc/epro-mq.yaml as committed (names and ports aside)")
	} else {
		var sets []string
		for svc, kv := range r.Overrides {
			for k, v := range kv {
				sets = append(sets, fmt.Sprintf("%s:%s=%v", svc, k, v))
			}
		}
		sort.Strings(sets)
		fmt.Fprintln(w, "service configs CHANGED for this run: "+strings.Join(sets, ", "))
	}
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tsent\taccepted\taccepted/s\tAPI p50\tp95\tp99\tp99.9\tmax\tE2E p50\tp99\trecv→stored p99\t")
	phases := r.Phases
	if r.Warmup != nil {
		phases = append([]PhaseResult{*r.Warmup}, phases...)
	}
	for _, p := range phases {
		e50, e99, s99 := "-", "-", "-"
		if p.E2E != nil && p.E2E.Count > 0 {
			e50, e99 = fmtMs(p.E2E.P50), fmtMs(p.E2E.P99)
			s99 = fmtMs(p.ServerE2E.P99)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", p.Name, p.Sent, p.Accepted, p.AcceptedPerSec,
			fmtMs(p.API.P50), fmtMs(p.API.P95), fmtMs(p.API.P99), fmtMs(p.API.P999), fmtMs(p.API.Max), e50, e99, s99)
	}
	tw.Flush()
	fmt.Fprintln(w, "(latencies in ms; API from send, or from the scheduled time in the open loop; E2E from the client's 202 to stored_at)")
	for _, p := range phases {
		notes := []string{p.Load}
		if bad := nonAccepted(p.Statuses); bad != "" {
			notes = append(notes, "non-202: "+bad)
		}
		if p.ConnErrors > 0 {
			var kinds []string
			for k, n := range p.ConnErrorKinds {
				kinds = append(kinds, fmt.Sprintf("%d× %s", n, k))
			}
			sort.Strings(kinds)
			notes = append(notes, fmt.Sprintf("%d connection errors/timeouts (%s)", p.ConnErrors, strings.Join(kinds, "; ")))
		}
		if p.LateStarts > 0 {
			notes = append(notes, fmt.Sprintf("%d sends >1ms behind schedule (API from the actual send: p50 %s, p99 %s ms)",
				p.LateStarts, fmtMs(p.APIFromSend.P50), fmtMs(p.APIFromSend.P99)))
		}
		if p.RowsPerInsert > 0 && p.E2E != nil {
			notes = append(notes, fmt.Sprintf("%.1f rows per INSERT", p.RowsPerInsert))
		}
		if s := p.E2ESeconds; s != nil && s.Seconds > 1 {
			notes = append(notes, fmt.Sprintf("E2E p99 per second: median %s ms, worst %s ms (second %d), %d of %d seconds over %.0f ms",
				fmtMs(s.MedianP99Ms), fmtMs(s.WorstP99Ms), s.WorstSecond, s.SecondsOver50Ms, s.Seconds, targetE2EP99Ms))
		}
		if p.E2ENegative > 0 {
			notes = append(notes, fmt.Sprintf("%d rows stored before the client read its 202", p.E2ENegative))
		}
		fmt.Fprintf(w, "  %-10s %s\n", p.Name+":", strings.Join(notes, "; "))
	}

	fmt.Fprintln(w, "\nCPU, % of one core (the host has "+strconv.Itoa(int(hostCap(r)/100))+" cores = "+strconv.Itoa(int(hostCap(r)))+"%):")
	if r.Infra == "external" {
		fmt.Fprintln(w, "  (the services of an already running suite are not known here: they count as other)")
	}
	cpuLine := func(name string, u CPUUse, items int, unit string) {
		fmt.Fprintf(w, "  %-14s %s\n", name, u)
		if per := u.perItem(items, unit); per != "" {
			fmt.Fprintf(w, "  %-14s %s\n", "", per)
		}
	}
	for _, p := range r.Phases {
		cpuLine(p.Name, p.CPU, p.Accepted, "report")
	}
	if r.Drain != nil && r.Drain.Skipped == "" {
		cpuLine("drain", r.Drain.CPU, r.Drain.Rows, "row")
	}
	if r.RawKafka != nil {
		cpuLine("raw Writer", r.RawKafka.CPU, r.RawKafka.Messages, "message")
	}
	for _, m := range r.RawMySQL {
		cpuLine(fmt.Sprintf("raw INSERT×%d", m.RowsPerStatement), m.CPU, m.Rows, "row")
	}

	fmt.Fprintln(w, "\nraw limits, same machine, same servers, same run:")
	if k := r.RawKafka; k != nil {
		fmt.Fprintf(w, "  kafka-go Writer acks=all, murmur2, BatchTimeout 1ms, %d goroutines each writing 1 message synchronously, %d-byte values:\n",
			k.Goroutines, k.ValueBytes)
		fmt.Fprintf(w, "    %s msgs/s (%d in %.1fs, %d errors; write p50 %s ms, p99 %s ms)\n",
			fmtRate(k.MsgsPerSec), k.Messages, k.Seconds, k.Errors, fmtMs(k.WriteLatency.P50), fmtMs(k.WriteLatency.P99))
	} else {
		fmt.Fprintln(w, "  kafka-go Writer: not measured")
	}
	if len(r.RawMySQL) == 0 {
		fmt.Fprintln(w, "  MariaDB INSERT: not measured")
	}
	for _, m := range r.RawMySQL {
		fmt.Fprintf(w, "  MariaDB multi-row INSERT … ON DUPLICATE KEY UPDATE (epro-mq's statement), %d rows/stmt, %d conns: %s rows/s (%d rows in %.2fs, %d deadlocks retried)\n",
			m.RowsPerStatement, m.Connections, fmtRate(m.RowsPerSec), m.Rows, m.Seconds, m.Deadlocks)
	}

	if d := r.Drain; d != nil && d.Skipped != "" {
		fmt.Fprintf(w, "\ndrain: not measured (%s)\n", d.Skipped)
	} else if d != nil {
		fmt.Fprintf(w, "\ndrain: %s rows/s over %d rows in %.2fs (%.1f rows per INSERT); restart → first row %.1fs, restart → all rows %.1fs\n",
			fmtRate(d.RowsPerSec), d.Rows, d.Seconds, d.RowsPerInsert, d.StartupSeconds, d.WallSeconds)
		fmt.Fprintf(w, "  method: %s\n", d.Method)
	}
	if s := r.Stock; s != nil && s.Skipped != "" {
		fmt.Fprintf(w, "\nstock go-zero + go-queue API: not measured (%s)\n", s.Skipped)
	} else if s != nil {
		fmt.Fprintf(w, "\nstock go-zero + go-queue API (%s, topic %s): acknowledged %d, in Kafka %d after %.1f s\n",
			s.Phase, s.Topic, s.Acknowledged, s.InKafka, s.LastArrivalSeconds)
		fmt.Fprintf(w, "  when the load ended the topic held %d records of the phase; %d when the wait ended (%.1f s)", s.RecordsAtLoadEnd, s.Records, s.WaitedSeconds)
		if s.WrongKey > 0 {
			fmt.Fprintf(w, "; %d acknowledged reports under another key than their patient", s.WrongKey)
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "  CPU from its first request to its last record in Kafka: %s\n", s.CPU)
		if per := s.CPU.perItem(s.Acknowledged, "report"); per != "" {
			fmt.Fprintf(w, "    %s\n", per)
		}
		fmt.Fprintf(w, "  setup: %s\n", s.Setup)
	}
	in := r.Integrity
	fmt.Fprintf(w, "\nintegrity (%s): accepted %d, rows %d, lost %d, duplicated %d, unexpected %d (%d answered non-202 but stored, %d never sent)\n",
		in.Scope, in.Accepted, in.Stored, in.Lost, in.Duplicated, in.Unexpected, in.UnexpectedRefused, in.UnexpectedForeign)

	fmt.Fprintln(w, "\ntargets:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, t := range r.Targets {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", t.Name, t.Measured, t.Goal, t.Status)
	}
	tw.Flush()
}

func hostCap(r *Result) float64 {
	for _, p := range r.Phases {
		if p.CPU.HostCapacity > 0 {
			return p.CPU.HostCapacity
		}
	}
	return 0
}

func fmtMs(v float64) string {
	switch {
	case v >= 100 || v <= -100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10 || v <= -10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func nonAccepted(statuses map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(statuses)) {
		if k != "202" {
			parts = append(parts, fmt.Sprintf("%s×%d", k, statuses[k]))
		}
	}
	return strings.Join(parts, " ")
}

func (r *Result) writeJSON(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
