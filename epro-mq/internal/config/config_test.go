package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zeromicro/go-zero/core/logx"

	"github.com/epro-intake/epro-mq/internal/config"
)

func shippedEnv(t *testing.T) {
	t.Setenv("EPRO_KAFKA_BROKERS", "k1:9092,k2:9092")
	t.Setenv("EPRO_MYSQL_DSN", "u:p@tcp(db:3306)/epro?parseTime=true&loc=UTC")
	t.Setenv("EPRO_REDIS_ADDR", "redis:6379")
}

// The shipped file must load through the function main uses, and must state the settings whose kq defaults
// would lose reports.
func TestShippedConfigStatesTheDeliveryContract(t *testing.T) {
	shippedEnv(t)
	c, err := config.Load("../../etc/epro-mq.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Reports.Offset != "first" {
		t.Errorf("Offset = %q; a new group must start at the earliest record", c.Reports.Offset)
	}
	if c.Reports.ForceCommit {
		t.Error("ForceCommit is true: failed reports would be committed")
	}
	if c.Reports.Topic != "epro.reports.v1" || c.DeadLetter.Topic != "epro.reports.v1.dlq" || c.Reports.Group != "epro-mq" {
		t.Errorf("topics/group = %s %s %s", c.Reports.Topic, c.DeadLetter.Topic, c.Reports.Group)
	}
	if c.MySQL.DSN == "" || c.Redis.Addr != "redis:6379" || len(c.Reports.Brokers) != 1 {
		t.Errorf("environment not applied: %+v %+v %v", c.MySQL, c.Redis, c.Reports.Brokers)
	}
	if c.Shutdown.WaitTime <= c.Pipeline.DrainTimeout {
		t.Errorf("go-zero force-quits after %s, before the %s drain can finish", c.Shutdown.WaitTime, c.Pipeline.DrainTimeout)
	}
	if c.Pipeline.RebalanceTimeout <= c.Pipeline.DrainTimeout {
		t.Errorf("rebalance timeout %s must exceed the drain %s", c.Pipeline.RebalanceTimeout, c.Pipeline.DrainTimeout)
	}
	if c.Pipeline.BatchWait <= 0 || c.Pipeline.BatchWait > 50*time.Millisecond || c.DeadLetter.Producer.BatchTimeout > 10*time.Millisecond {
		t.Errorf("batch waits %s / %s are latency floors and must stay small", c.Pipeline.BatchWait, c.DeadLetter.Producer.BatchTimeout)
	}
	// Values the file leaves to the tags.
	if c.Pipeline.QueueSize != 256 || c.Pipeline.RebalanceTimeout != 20*time.Second || c.Retry.MaxAttempts != 5 ||
		c.DeadLetter.Producer.BatchTimeout != time.Millisecond || c.DeadLetter.Producer.WriteTimeout != 2*time.Second ||
		c.MySQL.MaxOpenConns != 16 || !c.MySQL.Migrate || c.Redis.Timeout != 200*time.Millisecond {
		t.Errorf("tag defaults not applied: %+v %+v %+v %+v %+v", c.Pipeline, c.Retry, c.DeadLetter, c.MySQL, c.Redis)
	}
}

// go-zero's periodic CPU and memory lines are off unless StatLog turns them on, and the health listener has
// its own port.
func TestStatLogIsOffByDefaultAndHealthHasItsDefaults(t *testing.T) {
	shippedEnv(t)
	c, err := config.Load("../../etc/epro-mq.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.StatLog {
		t.Error("StatLog is on by default")
	}
	h := c.Health
	if h.Host != "0.0.0.0" || h.Port != 8889 || h.StallTimeout != 2*time.Minute || h.PingTimeout != time.Second || h.LagTimeout != 2*time.Second {
		t.Errorf("Health = %+v", h)
	}
	if err := c.SetUp(); err != nil {
		t.Fatal(err)
	}
	// The shipped file picks OTLP; tracing stays off until Telemetry.Endpoint is set.
	if c.Telemetry.Batcher != "otlpgrpc" || c.Telemetry.Sampler != 1 || c.Telemetry.Endpoint != "" {
		t.Errorf("Telemetry = %+v", c.Telemetry)
	}
	// No Telemetry.Endpoint: go-zero's trace agent stays off.
	if !c.Telemetry.Disabled {
		t.Error("tracing is on without a Telemetry.Endpoint")
	}
	var buf strings.Builder
	logx.SetWriter(logx.NewWriter(&buf))
	logx.Statf("CPU: %dm", 5)
	logx.Info("after the stat line")
	if strings.Contains(buf.String(), "CPU") || !strings.Contains(buf.String(), "after the stat line") {
		t.Errorf("stat line written with StatLog off:\n%s", buf.String())
	}
}

// minimal is the smallest config that loads: addresses, the delivery contract, the drain and the shutdown
// budget measured against it.
const minimal = `Name: m
Shutdown:
  WaitTime: 20s
Reports:
  Name: r
  Brokers: [k:9092]
  Topic: t
  Group: g
  Offset: first
  ForceCommit: false
Pipeline:
  DrainTimeout: 10s
DeadLetter:
  Producer:
    Brokers: [k:9092]
MySQL:
  DSN: d
`

func load(t *testing.T, yaml string) error {
	t.Helper()
	file := filepath.Join(t.TempDir(), "epro-mq.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := config.Load(file)
	return err
}

// with inserts lines right after the line "section:" of minimal (indented by the caller).
func with(section, lines string) string {
	return strings.Replace(minimal, section+":\n", section+":\n"+lines, 1)
}

func TestMinimalConfigLoads(t *testing.T) {
	if err := load(t, minimal); err != nil {
		t.Fatal(err)
	}
}

// Keys that load but do nothing are refused at start-up, whatever their value, with a message naming them.
func TestRefusesKeysWithoutEffect(t *testing.T) {
	for _, tc := range []struct{ key, lines string }{
		{"Reports.CommitInOrder", "  CommitInOrder: true\n"},
		{"Reports.CommitInOrder", "  CommitInOrder: false\n"},
		{"Reports.CommitInOrder", "  commitinorder: true\n"}, // go-zero matches keys in any case
		{"Reports.Conns", "  Conns: 1\n"},
		{"Reports.Consumers", "  Consumers: 8\n"},
		{"Reports.Log", "  Log:\n    Level: debug\n"},
		{"Reports.Mode", "  Mode: dev\n"},
		{"Reports.MetricsUrl", "  MetricsUrl: http://m\n"},
		{"Reports.Prometheus", "  Prometheus:\n    Port: 9101\n"},
		{"Reports.Telemetry", "  Telemetry:\n    Name: x\n"},
		{"Reports.DevServer", "  DevServer:\n    Enabled: true\n"},
		{"Reports.Shutdown", "  Shutdown:\n    WaitTime: 1s\n"},
		{"Reports.Profiling", "  Profiling:\n    Enabled: false\n"},
	} {
		err := load(t, with("Reports", tc.lines))
		if err == nil || !strings.Contains(err.Error(), tc.key+" has no effect") {
			t.Errorf("%q: Load() = %v, want it refused naming %s", tc.lines, err, tc.key)
		}
	}
	// A setting of the kafka-go Writer the producer no longer has.
	if err := load(t, with("  Producer", "    BatchSize: 100\n")); err == nil ||
		!strings.Contains(err.Error(), "DeadLetter.Producer.BatchSize has no effect") {
		t.Errorf("DeadLetter.Producer.BatchSize: Load() = %v, want it refused", err)
	}
	// go-zero's stat switch is replaced by StatLog.
	for _, lines := range []string{"Log:\n  Stat: true\n", "Log:\n  Stat: false\n"} {
		err := load(t, lines+minimal)
		if err == nil || !strings.Contains(err.Error(), "Log.Stat has no effect") {
			t.Errorf("%q: Load() = %v, want it refused", lines, err)
		}
	}
}

// Zero values are refused rather than replaced, and settings that only work relative to each other are
// checked together, with a message saying what to set.
func TestValidate(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"ForceCommit left to kq's default", strings.Replace(minimal, "  ForceCommit: false\n", "", 1), "Reports.ForceCommit must be false"},
		{"no drain", strings.Replace(minimal, "  DrainTimeout: 10s\n", "  BatchSize: 100\n", 1), "DrainTimeout"},
		{"zero drain", strings.Replace(minimal, "DrainTimeout: 10s", "DrainTimeout: 0s", 1), "Pipeline.DrainTimeout must be positive"},
		{"zero workers", with("Reports", "  Processors: 0\n"), "Reports.Processors"},
		{"zero batch", with("Pipeline", "  BatchSize: 0\n"), "Pipeline.BatchSize must be positive"},
		{"zero commit interval", with("Pipeline", "  CommitInterval: 0s\n"), "Pipeline.CommitInterval must be positive"},
		{"rebalance within the drain", with("Pipeline", "  RebalanceTimeout: 10s\n"), "Pipeline.RebalanceTimeout (10s) must exceed DrainTimeout (10s)"},
		{"wait time within the drain", strings.Replace(minimal, "WaitTime: 20s", "WaitTime: 11s", 1), "set Shutdown.WaitTime above 11s"},
		{"go-zero's wait time", strings.Replace(minimal, "Shutdown:\n  WaitTime: 20s\n", "", 1), "Shutdown.WaitTime"},
		{"zero producer attempts", with("  Producer", "    MaxAttempts: 0\n"), "DeadLetter.Producer.MaxAttempts must be positive"},
		{"zero producer batch timeout", with("  Producer", "    BatchTimeout: 0s\n"), "DeadLetter.Producer.BatchTimeout must be positive"},
		{"no producer brokers", strings.Replace(minimal, "  Producer:\n    Brokers: [k:9092]\n", "  Producer:\n    Brokers: ['']\n", 1), "DeadLetter.Producer.Brokers"},
		{"zero retries", "Retry:\n  MaxAttempts: 0\n" + minimal, "Retry"},
		{"dead letters to the source topic", with("DeadLetter", "  Topic: t\n"), "DeadLetter.Topic"},
		{"no dsn", strings.Replace(minimal, "DSN: d", "DSN: ''", 1), "MySQL.DSN"},
		{"negative health port", "Health:\n  Port: -1\n" + minimal, "Health: need 0 <= Port"},
		{"stall within a retry backoff", "Health:\n  StallTimeout: 5s\n" + minimal, "Health.StallTimeout (5s) must exceed"},
	} {
		err := load(t, tc.yaml)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Load() = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}
