// epro-suite runs the whole ePRO intake suite on one machine: it provides Kafka, MySQL and Redis (in-process
// stand-ins with -embedded, the servers named by EPRO_* with -real), creates the topics, builds epro-api,
// epro-mq and dlq-worker from this checkout and runs them as child processes until it is interrupted.
//
// It exits non-zero when the suite cannot start, when a service dies on its own, or when a service has to be
// killed because it did not stop within -stop-timeout after SIGTERM.
package main

import (
	"github.com/epro-intake/e2e/internal/stack"

	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/topic"
)

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
	services, err := buildServices(ctx, con, root, ports)
	if err != nil {
		return err
	}

	var inf *infra
	if opt.real {
		inf, err = realInfra(ctx, con)
	} else {
		inf, err = embeddedInfra(con)
	}
	if err != nil {
		return err
	}
	defer inf.Stop(con)
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

	reportUnset(con, root, services, vars.Lookup)
	sup := newSupervisor(con, root, vars.Environ())
	// Consumers first, so that the first report the API accepts already has a group waiting for it.
	for _, s := range services {
		if err := sup.Start(s); err != nil {
			return errors.Join(err, sup.Stop(opt.stopTimeout))
		}
	}

	readyCtx, cancel := context.WithTimeout(ctx, opt.readyTimeout)
	defer cancel()
	for _, s := range services {
		if path, ok := readyPaths[s.name]; ok && s.port != 0 {
			if err := waitReady(readyCtx, sup, s.name, localURL(s.port, path)); err != nil {
				return errors.Join(err, sup.Stop(opt.stopTimeout))
			}
		}
	}

	sample, err := newSample(time.Now())
	if err != nil {
		return errors.Join(err, sup.Stop(opt.stopTimeout))
	}
	base := localURL(ports["epro-api"], "")
	printBanner(ctx, con, root, base, sample, services, vars, inf, opt.real)

	var runErr error
	if opt.smoke {
		runErr = smoke(ctx, con, sup, base, sample)
	} else {
		select {
		case <-ctx.Done():
			con.Printf("stopping")
		case ex := <-sup.Exited():
			runErr = ex.unexpected()
		}
	}
	if err := sup.Stop(opt.stopTimeout); err != nil {
		runErr = errors.Join(runErr, err)
	}
	if runErr == nil {
		con.Printf("all services stopped cleanly")
	}
	return runErr
}

// checkPorts reads each service's port and makes sure it is free: a stale service still holding it would
// answer the readiness poll, and the curl lines would reach it instead of ours.
func checkPorts(root string, lookup lookupFunc) (map[string]int, error) {
	ports := map[string]int{}
	for _, name := range serviceNames {
		if _, err := os.Stat(filepath.Join(root, name, "etc", name+".yaml")); err != nil {
			continue // buildServices decides whether that is fatal
		}
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
