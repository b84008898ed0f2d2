// epro-bench measures the ePRO intake suite under load on one machine and holds it to two raw limits taken
// in the same run on the same servers: a plain kafka-go Writer (what the API's produce path could reach) and
// plain batched INSERTs into MariaDB (what the consumer's writes could reach). Last, with epro-api and epro-mq
// stopped, it runs the same closed loop against what a user would deploy instead, the stock go-zero +
// go-queue API (e2e/cmd/stock-api: 202 once kq.Pusher has buffered the report, before Kafka has it), counts
// how many of its acknowledged reports reach Kafka and when, and holds the suite to its accepted/s, its CPU
// per report and its p99 (-stock=false skips it).
//
// By default it builds epro-api, epro-mq and stock-api from this checkout and runs them against the real Kafka, MariaDB
// and Redis named by EPRO_KAFKA_BROKERS, EPRO_MYSQL_DSN and EPRO_REDIS_ADDR (the local servers of
// deploy/scripts/services.sh when unset), in a database and on topics of its own that it removes afterwards.
// -embedded uses in-process stand-ins instead, whose figures mean nothing. -api and -mysql-dsn point it at
// an API that is already running.
//
// Every phase is bounded in requests and time, and every address must be on the loopback interface: this is
// a benchmark for the machine it runs on, not a load tool for other hosts.
//
//	make bench                                   # the default run on the local servers
//	make bench BENCH_FLAGS='-out bench.json'     # and the figures as JSON
//	make bench BENCH_FLAGS='-baseline bench.json'  # and against that earlier run: 2× accepted/s, ½ CPU
//	epro-bench -rate 500 -duration 30s -backlog 0 -raw-batch ''   # one open-loop phase only
//	epro-bench -profile /tmp/prof                # CPU profiles of both services and the generator
//	epro-bench -set epro-mq:Pipeline.BatchSize=500   # try a setting without editing etc/*.yaml
//
// Machines shared with other work make absolute figures drift from run to run. The output therefore shows,
// per phase, the CPU each process used and what nothing named accounts for ("other"), and CPU time per
// report, which holds still when throughput does not.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Upper bounds on what one run may ask for.
const (
	maxPhaseDuration = 10 * time.Minute
	maxRequests      = 5_000_000
	maxConcurrency   = 4096
	maxRate          = 100_000
)

type options struct {
	embedded     bool
	apiURL       string
	mysqlDSN     string
	concurrency  int
	rate         float64
	duration     time.Duration
	n            int
	rateDuration time.Duration
	rateN        int
	maxInflight  int
	patients     int
	partitions   int
	backlog      int
	warmup       int
	rawDuration  time.Duration
	rawWriters   int
	rawBatches   []int
	rawConns     int
	rawRows      int
	drainTimeout time.Duration
	out          string
	baseline     string
	baselineRun  *Baseline // read from baseline
	keep         bool
	profile      string
	stock        bool
	// overrides are "service:Key.Path=value" settings applied to the generated service configs.
	overrides map[string]map[string]any
}

// setFlag collects -set values.
type setFlag struct{ o *options }

func (f setFlag) String() string { return "" }

func (f setFlag) Set(v string) error {
	svc, kv, ok := strings.Cut(v, ":")
	key, val, ok2 := strings.Cut(kv, "=")
	if !ok || !ok2 || key == "" || (svc != "epro-api" && svc != "epro-mq") {
		return errors.New(`want epro-api:Key.Path=value or epro-mq:Key.Path=value`)
	}
	if f.o.overrides == nil {
		f.o.overrides = map[string]map[string]any{}
	}
	if f.o.overrides[svc] == nil {
		f.o.overrides[svc] = map[string]any{}
	}
	var typed any = val
	if n, err := strconv.Atoi(val); err == nil {
		typed = n
	} else if b, err := strconv.ParseBool(val); err == nil {
		typed = b
	}
	f.o.overrides[svc][key] = typed
	return nil
}

func main() {
	os.Exit(run())
}

func run() int {
	var o options
	var rawBatches string
	flag.BoolVar(&o.embedded, "embedded", false, "run on in-process Kafka (kfake), MySQL (go-mysql-server) and Redis (miniredis); the figures are not meaningful")
	flag.StringVar(&o.apiURL, "api", "", "base URL of an epro-api that is already running (loopback only); needs -mysql-dsn")
	flag.StringVar(&o.mysqlDSN, "mysql-dsn", "", "go-sql-driver DSN of the database that API's consumer writes to (with -api)")
	flag.IntVar(&o.concurrency, "concurrency", 0, "closed-loop phase: this many connections, each sending its next report when the last is answered (default 64 when -rate is not given)")
	flag.Float64Var(&o.rate, "rate", 0, "open-loop phase: reports per second on a fixed schedule; latency counts from the scheduled time")
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "length of the closed-loop phase (or of the only phase)")
	flag.IntVar(&o.n, "n", 0, "stop the closed-loop phase after this many requests (0: -duration only)")
	flag.DurationVar(&o.rateDuration, "rate-duration", 0, "length of the open-loop phase (0: -duration)")
	flag.IntVar(&o.rateN, "rate-n", 0, "stop the open-loop phase after this many requests (0: by time only; with -rate alone, -n)")
	flag.IntVar(&o.maxInflight, "max-inflight", 512, "open loop: most requests in flight at once")
	flag.IntVar(&o.patients, "patients", 1000, "distinct patient ids (the Kafka key)")
	flag.IntVar(&o.partitions, "partitions", 12, "partitions of the benchmark's topics (epro-suite's default)")
	flag.IntVar(&o.backlog, "backlog", 50000, "reports submitted while epro-mq is stopped, to time its drain (0: skip)")
	flag.IntVar(&o.warmup, "warmup", 500, "reports submitted and awaited before measuring, to open connections and join the group")
	flag.DurationVar(&o.rawDuration, "raw-duration", 10*time.Second, "length of the raw kafka-go Writer measurement (0: skip)")
	flag.IntVar(&o.rawWriters, "raw-writers", 0, "goroutines of the raw Writer (0: the closed-loop concurrency, else 64)")
	flag.StringVar(&rawBatches, "raw-batch", "100,500", "rows per statement of the raw INSERT measurement, comma-separated (empty: skip)")
	flag.IntVar(&o.rawConns, "raw-conns", 4, "connections of the raw INSERT measurement")
	flag.IntVar(&o.rawRows, "raw-rows", 0, "rows of the raw INSERT measurement (0: as many as -backlog, at least 20000)")
	flag.DurationVar(&o.drainTimeout, "drain-timeout", 2*time.Minute, "how long to wait for the consumer to store every accepted report")
	flag.StringVar(&o.out, "out", "", "also write the figures as JSON to this file")
	flag.StringVar(&o.baseline, "baseline", "", "a previous run's -out JSON: also hold this run's closed loop to at least twice its accepted/s and at most half its CPU per report")
	flag.BoolVar(&o.keep, "keep", false, "keep the database, topics and service logs afterwards")
	flag.Var(setFlag{&o}, "set", "override one setting of a service's etc/*.yaml for this run, e.g. -set epro-mq:Pipeline.BatchWait=20ms (repeatable; the output names every override)")
	flag.BoolVar(&o.stock, "stock", true, "after the other phases, stop the suite and run the closed loop against the stock go-zero + go-queue API (e2e/cmd/stock-api), then count what it acknowledged in Kafka")
	flag.StringVar(&o.profile, "profile", "", "write CPU profiles of epro-api, epro-mq and the generator during the closed-loop phase, and of epro-mq during the drain, into this directory")
	flag.Parse()

	if err := o.check(rawBatches); err != nil {
		fmt.Fprintln(os.Stderr, "epro-bench:", err)
		return 2
	}
	if o.baseline != "" {
		var err error
		if o.baselineRun, err = readBaseline(o.baseline); err != nil {
			fmt.Fprintln(os.Stderr, "epro-bench:", err)
			return 2
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	b := &bench{opt: o, log: os.Stderr}
	res, err := b.run(ctx)
	if res != nil {
		res.print(os.Stdout)
		if o.out != "" {
			if werr := res.writeJSON(o.out); werr != nil {
				fmt.Fprintln(os.Stderr, "epro-bench:", werr)
				err = errors.Join(err, werr)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "epro-bench:", err)
		return 1
	}
	return 0
}

func (o *options) check(rawBatches string) error {
	if (o.apiURL == "") != (o.mysqlDSN == "") {
		return errors.New("-api and -mysql-dsn go together")
	}
	if o.apiURL != "" && o.embedded {
		return errors.New("-embedded starts its own suite; it does not combine with -api")
	}
	if o.concurrency == 0 && o.rate == 0 {
		o.concurrency = 64
	}
	if o.rate > 0 && o.concurrency == 0 && o.rateN == 0 {
		o.rateN = o.n
	}
	o.rateDuration = cmp.Or(o.rateDuration, o.duration)
	switch {
	case o.concurrency < 0 || o.concurrency > maxConcurrency:
		return fmt.Errorf("-concurrency must be 0..%d", maxConcurrency)
	case o.rate < 0 || o.rate > maxRate:
		return fmt.Errorf("-rate must be 0..%d", maxRate)
	case o.maxInflight < 1 || o.maxInflight > maxConcurrency:
		return fmt.Errorf("-max-inflight must be 1..%d", maxConcurrency)
	case o.duration <= 0 && o.n <= 0, o.rate > 0 && o.rateDuration <= 0 && o.rateN <= 0:
		return errors.New("each phase needs a -duration or -n bound")
	case o.duration > maxPhaseDuration || o.rateDuration > maxPhaseDuration || o.rawDuration > maxPhaseDuration:
		return fmt.Errorf("durations are capped at %s", maxPhaseDuration)
	case o.n < 0 || o.n > maxRequests || o.rateN < 0 || o.rateN > maxRequests || o.backlog < 0 || o.backlog > maxRequests ||
		o.warmup < 0 || o.warmup > maxRequests || o.rawRows < 0 || o.rawRows > maxRequests:
		return fmt.Errorf("request counts must be 0..%d", maxRequests)
	case o.patients < 1:
		return errors.New("-patients must be at least 1")
	case o.partitions < 1:
		return errors.New("-partitions must be at least 1")
	case o.rawConns < 1 || o.rawConns > 256:
		return errors.New("-raw-conns must be 1..256")
	case o.rawWriters < 0 || o.rawWriters > maxConcurrency:
		return fmt.Errorf("-raw-writers must be 0..%d", maxConcurrency)
	}
	for _, s := range strings.Split(rawBatches, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		// 14 placeholders a row; MariaDB allows 65535 in one statement.
		if err != nil || n < 1 || n > 4000 {
			return fmt.Errorf("-raw-batch: %q is not a row count of 1..4000", s)
		}
		o.rawBatches = append(o.rawBatches, n)
	}
	o.rawWriters = cmp.Or(o.rawWriters, o.concurrency, 64)
	o.rawRows = cmp.Or(o.rawRows, max(o.backlog, 20000))
	return nil
}

// progress writes a line about what the benchmark is doing now; the results go to stdout at the end.
func progress(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}
