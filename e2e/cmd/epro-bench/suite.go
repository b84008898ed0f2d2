package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/topic"
	"github.com/epro-intake/e2e/internal/ledger"
	"github.com/epro-intake/e2e/internal/stack"
)

// stopTimeout is above epro-mq's Shutdown.WaitTime (20s), so its own drain always finishes first.
const stopTimeout = 25 * time.Second

// attach targets an API that is already running.
func (b *bench) attach(ctx context.Context) error {
	o := b.opt
	u, err := url.Parse(o.apiURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("-api must be a URL such as http://127.0.0.1:8888")
	}
	if err := checkLoopback("-api", u.Host); err != nil {
		return err
	}
	b.apiBase = strings.TrimRight(o.apiURL, "/")
	cfg, err := stack.ParseDSN(o.mysqlDSN)
	if err != nil {
		return fmt.Errorf("-mysql-dsn: %w", err)
	}
	if cfg.DBName == "" {
		return errors.New("-mysql-dsn names no database")
	}
	if err := checkLoopback("-mysql-dsn", cfg.Addr); err != nil {
		return err
	}
	b.server = cfg
	b.dbName = cfg.DBName
	b.db, err = stack.OpenMySQL(cfg, cfg.DBName, 4)
	if err != nil {
		return err
	}
	b.cleanups = append(b.cleanups, func() { b.db.Close() })
	// A second early: the API stamps received_at with its own clock, on this host.
	b.since = time.Now().Add(-time.Second)
	b.brokers = stack.RealAddrs().Brokers
	if err := checkLoopback(stack.EnvKafkaBrokers, b.brokers...); err != nil {
		return err
	}
	b.res.Infra = "external"
	b.res.Target = fmt.Sprintf("epro-api at %s, MySQL %s/%s, raw Kafka at %s", b.apiBase, cfg.Addr, cfg.DBName, strings.Join(b.brokers, ","))
	ready := b.apiBase + "/readyz"
	if err := stack.Eventually(ctx, 10*time.Second, ready, nil, stack.HTTPOK(ctx, &http.Client{Timeout: time.Second}, ready)); err != nil {
		return err
	}
	if _, err := ledger.Count(ctx, b.db, time.Time{}); err != nil {
		return fmt.Errorf("-mysql-dsn: no reports table there: %w", err)
	}
	return nil
}

// startSuite builds the services and runs them on fresh names: their own database, topics and group.
func (b *bench) startSuite(ctx context.Context) error {
	o := b.opt
	b.managed = true
	root, err := stack.Root(ctx)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "epro-bench-")
	if err != nil {
		return err
	}
	tokens, err := stack.NewPatientTokens()
	if err != nil {
		return err
	}
	b.st = &stack.Stack{Root: root, Bin: filepath.Join(dir, "bin"), Dir: dir, Tokens: tokens}
	services := []string{"epro-api", "epro-mq"}
	if o.stock {
		services = append(services, "stock-api")
	}
	b.progress("building %s", strings.Join(services, ", "))
	if err := stack.Build(ctx, root, b.st.Bin, services...); err != nil {
		return err
	}

	id := b.res.RunID
	b.dbName = "epro_bench_" + strings.ReplaceAll(id, "-", "_")
	var inf *stack.Infra
	if o.embedded {
		inf, err = b.startEmbedded()
	} else {
		inf, err = b.realInfra(ctx)
	}
	if err != nil {
		return err
	}
	b.st.Infra, b.brokers = inf, inf.Brokers

	reportsTopic := "epro.bench." + id + ".reports.v1"
	dlqTopic := reportsTopic + ".dlq"
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = topic.Ensure(tctx, b.brokers,
		replicated(b.brokers, topic.Spec{Name: reportsTopic, Partitions: o.partitions}),
		replicated(b.brokers, topic.Spec{Name: dlqTopic, Partitions: 3}))
	cancel()
	if err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	b.topics = append(b.topics, reportsTopic, dlqTopic)

	port, err := stack.FreePort()
	if err != nil {
		return err
	}
	b.apiBase = "http://127.0.0.1:" + strconv.Itoa(port)
	apiSet := map[string]any{"Host": "127.0.0.1", "Port": port, "Topic": reportsTopic,
		// The load generator is one client (one address) sending for every patient: the per-client limit,
		// sized for a clinic's or a carrier's address, would refuse it. The per-patient limit stays as shipped,
		// and the limiter's Redis calls are still made for both. The buckets are the run's own, as its topics
		// and database are: the patients' ids repeat from run to run, and back-to-back runs drew one patient's
		// bucket (refilled at 1/s) down to 429s.
		"RateLimit.ClientBurst": 10_000_000, "RateLimit.ClientRate": 1_000_000,
		"RateLimit.KeyPrefix": "epro:ratelimit:bench-" + id}
	b.group = "epro-bench-" + id
	mqSet := map[string]any{
		"Reports.Topic": reportsTopic, "Reports.Group": b.group, "Reports.Name": b.group,
		"DeadLetter.Topic": dlqTopic,
	}
	b.devPorts = map[string]int{}
	if o.profile != "" {
		// go-zero's dev server carries pprof; it is turned on only when profiles are asked for.
		for name, set := range map[string]map[string]any{"epro-api": apiSet, "epro-mq": mqSet} {
			p, err := stack.FreePort()
			if err != nil {
				return err
			}
			b.devPorts[name] = p
			maps.Copy(set, map[string]any{"DevServer.Enabled": true, "DevServer.Host": "127.0.0.1", "DevServer.Port": p,
				"DevServer.EnablePprof": true, "DevServer.EnableMetrics": false})
		}
	}
	maps.Copy(apiSet, o.overrides["epro-api"])
	maps.Copy(mqSet, o.overrides["epro-mq"])
	// The benchmark measures the owners' configuration with only these keys changed, not one of its own.
	apiCfg, err := b.st.Config("epro-api", "epro-api", apiSet)
	if err != nil {
		return err
	}
	if b.mqCfg, err = b.st.Config("epro-mq", "epro-mq", mqSet); err != nil {
		return err
	}
	childDSN := b.server.Clone()
	childDSN.DBName = b.dbName
	b.st.Infra.DSN = childDSN.FormatDSN()
	b.st.Env = append(append(os.Environ(), b.st.Infra.Env()...), "EPRO_API_PORT="+strconv.Itoa(port), b.st.Tokens.Env())

	// The consumer first: it applies the migrations the API's status lookups read.
	if err := b.startMQ(); err != nil {
		return err
	}
	b.api, err = b.st.Start("epro-api", "epro-api", apiCfg)
	if err != nil {
		return err
	}
	b.cpu.set("epro-api", b.api.Pid())
	b.progress("waiting for epro-api at %s (logs in %s)", b.apiBase, dir)
	ready := b.apiBase + "/readyz"
	if err := b.st.Wait(ctx, 2*time.Minute, ready, stack.HTTPOK(ctx, &http.Client{Timeout: time.Second}, ready)); err != nil {
		return fmt.Errorf("%w%s", err, b.logHint())
	}
	b.db, err = stack.OpenMySQL(childDSN, childDSN.DBName, 4)
	if err != nil {
		return err
	}
	// The table exists once epro-mq has migrated; give it the time it gives itself to reach MySQL.
	err = b.st.Wait(ctx, time.Minute, "the reports table from epro-mq", func() (bool, string) {
		if _, err := ledger.Count(ctx, b.db, time.Time{}); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	if err != nil {
		return fmt.Errorf("%w%s", err, b.logHint())
	}
	return nil
}

// startMQ starts epro-mq and has its CPU watched.
func (b *bench) startMQ() error {
	mq, err := b.st.Start("epro-mq", "epro-mq", b.mqCfg)
	if err != nil {
		return err
	}
	b.mq = mq
	b.cpu.set("epro-mq", mq.Pid())
	return nil
}

// stopService stops p with the stack's policy and says whether it stopped on its own.
func stopService(p *stack.Proc) error {
	if p.Exited() {
		return p.Err()
	}
	if _, killed := p.Stop(stopTimeout); killed {
		return fmt.Errorf("%s did not stop within %s of SIGTERM and was killed", p.Name, stopTimeout)
	}
	return nil
}

func (b *bench) realInfra(ctx context.Context) (*stack.Infra, error) {
	inf := stack.RealAddrs()
	if err := checkLoopback(stack.EnvKafkaBrokers, inf.Brokers...); err != nil {
		return nil, err
	}
	cfg, err := stack.ParseDSN(inf.DSN)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", stack.EnvMySQLDSN, err)
	}
	if err := errors.Join(checkLoopback(stack.EnvMySQLDSN, cfg.Addr), checkLoopback(stack.EnvRedisAddr, inf.RedisAddr)); err != nil {
		return nil, err
	}
	b.server = cfg
	hint := " (are the servers up? make services-up, or deploy/scripts/services.sh up)"
	for _, addr := range append([]string{cfg.Addr, inf.RedisAddr}, inf.Brokers...) {
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			return nil, fmt.Errorf("%s: %w%s", addr, err, hint)
		}
		c.Close()
	}
	if err := stack.CreateDatabase(ctx, b.server, b.dbName); err != nil {
		return nil, fmt.Errorf("%w%s", err, hint)
	}
	b.cleanups = append(b.cleanups, func() {
		if !b.opt.keep {
			_ = stack.DropDatabase(context.Background(), b.server, b.dbName)
		}
	})
	b.res.Infra = "real"
	rs := replicated(inf.Brokers, topic.Spec{})
	b.res.Target = fmt.Sprintf("Kafka %s (topics: replication factor %d, min.insync.replicas %s), MariaDB %s (database %s), Redis %s",
		strings.Join(inf.Brokers, ","), rs.Replication, minInSync(rs), cfg.Addr, b.dbName, inf.RedisAddr)
	return inf, nil
}

func (b *bench) startEmbedded() (*stack.Infra, error) {
	inf, err := stack.Embedded(stack.EmbeddedOptions{Database: b.dbName})
	if err != nil {
		return nil, err
	}
	b.cleanups = append(b.cleanups, inf.Stop)
	if b.server, err = stack.ParseDSN(inf.DSN); err != nil {
		return nil, err
	}
	b.res.Infra = "embedded"
	b.res.Target = fmt.Sprintf("in-process kfake %s, go-mysql-server %s, miniredis %s", strings.Join(inf.Brokers, ","), b.server.Addr, inf.RedisAddr)
	return inf, nil
}

// cleanup stops the services, then removes what the run created, newest first. The run directory with the
// service logs stays when the run failed or -keep was given.
func (b *bench) cleanup(failed bool) {
	for _, p := range []*stack.Proc{b.stock, b.api, b.mq} {
		if p != nil {
			if err := stopService(p); err != nil {
				b.progress("%v", err)
			}
		}
	}
	if len(b.topics) > 0 && !b.opt.keep && !b.opt.embedded {
		client := &kafka.Client{Addr: kafka.TCP(b.brokers...), Timeout: 10 * time.Second}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		if _, err := client.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: b.topics}); err != nil {
			b.progress("delete topics %v: %v", b.topics, err)
		}
		if b.group != "" {
			// Its offsets would otherwise linger until the broker expires them.
			if _, err := client.DeleteGroups(ctx, &kafka.DeleteGroupsRequest{GroupIDs: []string{b.group}}); err != nil {
				b.progress("delete consumer group %s: %v", b.group, err)
			}
		}
		cancel()
	}
	if b.db != nil && b.managed {
		b.db.Close()
	}
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		b.cleanups[i]()
	}
	if b.st != nil {
		if failed || b.opt.keep {
			b.progress("service logs kept in %s", b.st.Dir)
		} else {
			_ = os.RemoveAll(b.st.Dir)
		}
	}
}

func (b *bench) logHint() string {
	if b.st == nil {
		return ""
	}
	return " (service logs: " + b.st.Dir + ")"
}

// checkLoopback refuses any address that is not on this machine's loopback interface.
func checkLoopback(what string, hostports ...string) error {
	for _, hostport := range hostports {
		host, _, err := net.SplitHostPort(hostport)
		if err != nil {
			host = hostport
		}
		var ips []net.IP
		if ip := net.ParseIP(host); ip != nil {
			ips = []net.IP{ip}
		} else if ips, err = net.LookupIP(host); err != nil || len(ips) == 0 {
			return fmt.Errorf("%s: cannot resolve %q", what, host)
		}
		for _, ip := range ips {
			if !ip.IsLoopback() {
				return fmt.Errorf("%s: %s is not a loopback address; epro-bench only loads this machine", what, host)
			}
		}
	}
	return nil
}

// replicated gives s the production replication on a cluster of three or more brokers (replication factor 3,
// min.insync.replicas 2, as docker-compose.yml and the cluster of deploy/scripts run them) and 1 on a single
// broker, so that a run on the cluster (make bench-cluster) shows what RF 3 costs against a run on one broker.
func replicated(brokers []string, s topic.Spec) topic.Spec {
	if len(brokers) >= 3 {
		s.Replication, s.MinInSync = 3, 2
	} else {
		s.Replication = 1
	}
	return s
}

func minInSync(s topic.Spec) string {
	if s.MinInSync == 0 {
		return "the broker's"
	}
	return fmt.Sprint(s.MinInSync)
}
