// epro-suite runs the whole ePRO intake suite on one machine: it provides Kafka, MySQL and Redis (in-process
// stand-ins with -embedded, the servers named by EPRO_* with -real), creates the topics, builds epro-api,
// epro-mq and dlq-worker from this checkout and runs them as child processes until it is interrupted.
//
// It exits non-zero when the suite cannot start, when a service dies on its own, or when a service has to be
// killed because it did not stop within -stop-timeout after SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/topic"
	"github.com/epro-intake/e2e/internal/stack"
)

// dbName is the database the embedded MySQL holds.
const dbName = "epro"

// dlqPartitions is fixed: dead letters are rare and replayed by one worker, so more partitions buy nothing.
const dlqPartitions = 3

type options struct {
	real         bool
	partitions   int
	readyTimeout time.Duration
	stopTimeout  time.Duration
	smoke        bool
}

func main() {
	os.Exit(run())
}

func run() int {
	var opt options
	embedded := flag.Bool("embedded", true, "run Kafka, MySQL and Redis in-process (in memory; everything is lost on exit)")
	flag.BoolVar(&opt.real, "real", false, "use the servers named by EPRO_KAFKA_BROKERS, EPRO_MYSQL_DSN and EPRO_REDIS_ADDR")
	flag.IntVar(&opt.partitions, "partitions", 12, "partitions of "+report.Topic+" when it is created")
	flag.DurationVar(&opt.readyTimeout, "ready-timeout", 2*time.Minute, "how long to wait for epro-api's /readyz")
	// Above epro-mq's go-zero Shutdown.WaitTime (20s), so its own drain always gets to finish first.
	flag.DurationVar(&opt.stopTimeout, "stop-timeout", 25*time.Second, "how long a service may take to stop after SIGTERM before it is killed")
	flag.BoolVar(&opt.smoke, "smoke", false, "once ready, submit the sample report, wait until it is stored, then stop")
	flag.Parse()

	con := newConsole(os.Stdout, os.Stderr)
	if opt.real && explicitlySet("embedded") && *embedded {
		con.Errorf("-embedded and -real exclude each other")
		return 2
	}
	opt.real = opt.real || !*embedded
	if opt.partitions < 1 {
		con.Errorf("-partitions must be at least 1")
		return 2
	}

	// Never stopped: a second Ctrl-C during shutdown must not kill the suite and orphan half-stopped
	// children; -stop-timeout bounds the wait instead.
	ctx, _ := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)

	if err := runSuite(ctx, con, opt); err != nil {
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			con.Printf("interrupted")
			return 1
		}
		con.Errorf("%v", err)
		return 1
	}
	return 0
}

func runSuite(ctx context.Context, con *console, opt options) error {
	root, err := stack.Root(ctx)
	if err != nil {
		return err
	}
	vars, err := newChildVars()
	if err != nil {
		return err
	}
	ports, err := checkPorts(root, vars.Lookup)
	if err != nil {
		return err
	}

	// Build before starting anything, so that a compile error costs no startup and leaves nothing running.
	bin := filepath.Join(root, "bin")
	if err := buildServices(ctx, con, root, bin); err != nil {
		return err
	}

	inf, err := startInfra(ctx, con, opt.real)
	if err != nil {
		return err
	}
	defer func() {
		inf.Stop()
		if inf.Embedded {
			con.Printf("embedded Kafka, MySQL and Redis stopped")
		}
	}()
	vars.extra = inf.Env()

	topicCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = topic.Ensure(topicCtx, inf.Brokers,
		topic.Spec{Name: report.Topic, Partitions: opt.partitions, Replication: 1},
		topic.Spec{Name: report.DLQTopic, Partitions: dlqPartitions, Replication: 1},
	)
	cancel()
	if err != nil {
		return fmt.Errorf("topics on %v: %w", inf.Brokers, err)
	}
	if opt.real {
		warnPartitions(ctx, con, inf.Brokers, map[string]int{report.Topic: opt.partitions, report.DLQTopic: dlqPartitions})
	}
	con.Printf("topics %s (%d partitions) and %s (%d) ready", report.Topic, opt.partitions, report.DLQTopic, dlqPartitions)

	reportUnset(con, root, vars.Lookup)
	apiKey, _ := vars.Lookup(stack.EnvAPIJWTKey)
	st := &stack.Stack{Root: root, Bin: bin, Infra: inf, Env: vars.Environ(), Tokens: stack.PatientTokensWithKey(apiKey)}
	st.Logf = con.Printf
	for _, name := range stack.Services {
		spec := st.Spec(name, name, stack.ConfigPath(name))
		spec.Log, spec.Stdout, spec.Stderr = "", con.Stdout(name), con.Stderr(name)
		if _, err := st.Group.Start(spec); err != nil {
			return errors.Join(err, st.Stop(opt.stopTimeout))
		}
	}

	readyCtx, cancel := context.WithTimeout(ctx, opt.readyTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for _, name := range stack.Services {
		if path, ok := stack.ReadyPaths[name]; ok && ports[name] != 0 {
			url := localURL(ports[name], path)
			if err := st.Wait(readyCtx, opt.readyTimeout, name+" at "+url, stack.HTTPOK(readyCtx, client, url)); err != nil {
				return errors.Join(err, st.Stop(opt.stopTimeout))
			}
		}
	}

	sample, err := newSample(time.Now())
	if err != nil {
		return errors.Join(err, st.Stop(opt.stopTimeout))
	}
	base := localURL(ports["epro-api"], "")
	printBanner(ctx, con, st, base, sample, ports["dlq-worker"], vars)

	var runErr error
	if opt.smoke {
		runErr = smoke(ctx, con, st, base, sample)
	} else {
		select {
		case <-ctx.Done():
			con.Printf("stopping")
		case <-st.Dead():
			runErr = st.Died()
		}
	}
	if err := st.Stop(opt.stopTimeout); err != nil {
		runErr = errors.Join(runErr, err)
	}
	if runErr == nil {
		con.Printf("all services stopped cleanly")
	}
	return runErr
}

// buildServices builds every service into bin. Every service is required: one that does not build stops
// the suite with the compiler's message, because a suite without it (dlq-worker's ops page, say) would look
// like a working one.
func buildServices(ctx context.Context, con *console, root, bin string) error {
	con.Printf("building %s", strings.Join(stack.Services, ", "))
	return stack.Build(ctx, root, bin, stack.Services...)
}

// startInfra provides the servers: the ones named by EPRO_* with -real, otherwise in-process stand-ins on
// the usual ports where those are free.
func startInfra(ctx context.Context, con *console, real bool) (*stack.Infra, error) {
	if real {
		inf, err := stack.Real(ctx)
		if err != nil {
			return nil, err
		}
		con.Printf("Kafka at %s", strings.Join(inf.Brokers, ","))
		con.Printf("MySQL at %s", stack.MySQLAddr(inf.DSN))
		con.Printf("Redis at %s", inf.RedisAddr)
		return inf, nil
	}
	inf, err := stack.Embedded(stack.EmbeddedOptions{UsualAddrs: true, Database: dbName, Logf: con.Printf})
	if err != nil {
		return nil, err
	}
	con.Printf("embedded Kafka (kfake) at %s", strings.Join(inf.Brokers, ","))
	con.Printf("embedded MySQL (go-mysql-server, database %s) at %s", dbName, stack.MySQLAddr(inf.DSN))
	con.Printf("embedded Redis (miniredis) at %s", inf.RedisAddr)
	return inf, nil
}

// warnPartitions points out topics that already existed with another partition count: topic.Ensure leaves
// an existing topic as it is, so -partitions silently does nothing for it.
func warnPartitions(ctx context.Context, con *console, brokers []string, want map[string]int) {
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: slices.Collect(maps.Keys(want))})
	if err != nil {
		con.Printf("could not read topic metadata: %v", err)
		return
	}
	for _, t := range md.Topics {
		if n, ok := want[t.Name]; ok && t.Error == nil && len(t.Partitions) != n {
			con.Printf("note: %s already existed with %d partitions (asked for %d); it was left as it is",
				t.Name, len(t.Partitions), n)
		}
	}
}

// checkPorts reads each service's port and makes sure it is free: a stale service still holding it would
// answer the readiness poll, and the curl lines would reach it instead of ours.
func checkPorts(root string, lookup stack.LookupFunc) (map[string]int, error) {
	ports := map[string]int{}
	for _, name := range stack.Services {
		port, err := servicePort(root, name, lookup)
		if err != nil {
			return nil, err
		}
		if port == 0 {
			continue
		}
		if err := portFree(port); err != nil {
			return nil, fmt.Errorf("%s port %d: %w (is another %s or suite still running?)", name, port, err, name)
		}
		ports[name] = port
	}
	if ports["epro-api"] == 0 {
		// go-zero's RestConf has no default port, so epro-api would refuse to start too.
		return nil, errors.New("epro-api's config sets no Port")
	}
	return ports, nil
}

func localURL(port int, path string) string {
	return "http://127.0.0.1:" + strconv.Itoa(port) + path
}

func explicitlySet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

func portFree(port int) error {
	// The services bind every interface (Host 0.0.0.0), so that is what has to be free.
	ln, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return err
	}
	return ln.Close()
}
