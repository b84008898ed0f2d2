// Package config is epro-mq's configuration, loaded from etc/epro-mq.yaml with secrets from the environment.
//
// Every default is stated once, in a go-zero tag here (or in kq.KqConf's and go-zero's own tags). The
// constructors refuse zero values instead of filling in defaults of their own, and Validate checks the
// settings that are only right relative to each other. Keys that would load but have no effect are refused
// by Load.
package config

import (
	"errors"
	"fmt"
	"time"

	"github.com/zeromicro/go-queue/kq"
	"github.com/zeromicro/go-zero/core/logx"
	"github.com/zeromicro/go-zero/core/service"

	"github.com/epro-intake/common/conffile"
	"github.com/epro-intake/common/producer"
	"github.com/epro-intake/epro-mq/internal/consumer"
)

// Config is epro-mq's configuration.
type Config struct {
	service.ServiceConf
	// Reports is the consumed report topic in kq's terms. epro-mq honours Brokers, Topic, Group, Offset
	// (kq's default is "last"; use "first"), Processors (the worker count), MinBytes and MaxBytes. It refuses
	// ForceCommit: true (kq's default), SASL and TLS settings, and the keys it would ignore: Conns and
	// Consumers (it runs one fetch loop per assigned partition), CommitInOrder (it always commits a partition
	// in order) and kq's embedded service settings other than the Name kq requires.
	Reports kq.KqConf
	// Pipeline shapes the worker pool, batching, commits and draining.
	Pipeline consumer.Conf
	// Retry shapes how failures are retried and when they are dead-lettered.
	Retry RetryConf
	// DeadLetter is where records that cannot be stored go. Its producer always writes with acks=all and
	// murmur2 partitioning by key (common/producer); those are not settings.
	DeadLetter DeadLetterConf
	MySQL      MySQLConf
	Redis      RedisConf
	// Questionnaires, when set, is the catalogue of "questionnaireId@version" pairs epro-mq stores; other
	// versions fail permanently and are dead-lettered, to be replayed once the catalogue has them.
	Questionnaires []string `json:",optional"`
	// Health is epro-mq's own HTTP listener for /healthz, /readyz and /metrics.
	Health HealthConf
	// StatLog turns on go-zero's periodic CPU and memory log lines (core/stat), which say less than
	// /metrics. It replaces go-zero's Log.Stat, whose default is on; Log.Stat is refused.
	StatLog bool `json:",default=false"`
	// ProgressInterval is how often a line with counters (stored, skipped, dead-lettered, retries, commits)
	// is logged, so an operator sees a backlog drain or a stall.
	ProgressInterval time.Duration `json:",default=30s"`
}

// HealthConf configures the HTTP listener for probes and scrapes. It is epro-mq's own rather than go-zero's
// DevServer: DevServer's /healthz answers from go-zero's process-wide probe (up once started), it cannot serve
// a /readyz that asks the consumer and MySQL, and its /metrics serves Prometheus' global registry; the
// benchmark also uses DevServer for pprof, which must stay off in production.
type HealthConf struct {
	Host string `json:",default=0.0.0.0"`
	// Port is beside epro-api's 8888 and dlq-worker's 8890; 0 takes any free port (tests).
	Port int `json:",default=8889"`
	// StallTimeout: /healthz fails when records are in flight and for this long no batch finished, no work
	// arrived at an idle pool and no retry began. Above Retry.TransientMaxBackoff and MaxBackoff, so an
	// outage being retried is not a stall.
	StallTimeout time.Duration `json:",default=2m"`
	// PingTimeout bounds /readyz's MySQL ping.
	PingTimeout time.Duration `json:",default=1s"`
	// LagTimeout bounds the broker request a /metrics scrape makes for the partitions' log ends.
	LagTimeout time.Duration `json:",default=2s"`
}

// RetryConf: see ingest.Conf.
type RetryConf struct {
	MaxAttempts         int           `json:",default=5"`
	InitialBackoff      time.Duration `json:",default=200ms"`
	MaxBackoff          time.Duration `json:",default=5s"`
	TransientMaxBackoff time.Duration `json:",default=5s"`
}

// DeadLetterConf names the dead-letter topic and configures its producer.
type DeadLetterConf struct {
	Topic    string `json:",default=epro.reports.v1.dlq"`
	Producer producer.Conf
}

// MySQLConf configures the reports database.
type MySQLConf struct {
	// DSN in go-sql-driver form. parseTime=true, loc=UTC and timeTruncate=1us are forced in code (mysqldb.Open).
	DSN          string
	MaxOpenConns int `json:",default=16"`
	// Migrate applies pending schema migrations at start.
	Migrate bool `json:",default=true"`
}

// RedisConf configures the dedupe fast path. An empty Addr disables it.
type RedisConf struct {
	Addr     string        `json:",optional"`
	Password string        `json:",optional"`
	Timeout  time.Duration `json:",default=200ms"`
	PoolSize int           `json:",default=32"`
}

// SetUp applies StatLog to the log settings and sets go-zero up (logs, DevServer, tracing) as
// ServiceConf.SetUp does. Tracing is off unless Telemetry.Endpoint names a collector: go-zero would otherwise
// record every span and export none.
func (c *Config) SetUp() error {
	c.Log.Stat = c.StatLog
	c.Telemetry.Disabled = c.Telemetry.Disabled || c.Telemetry.Endpoint == ""
	return c.ServiceConf.SetUp()
}

// MustSetUp is SetUp that exits on an error; for main.
func (c *Config) MustSetUp() { logx.Must(c.SetUp()) }

// Load reads file as epro-mq's main does: ${VAR} references are expanded from the environment (as
// conf.UseEnv does), keys that would have no effect are refused, tag defaults are filled in and Validate runs.
func Load(file string) (Config, error) {
	var c Config
	if err := conffile.Load(file, &c, "epro-mq", ineffectiveKeys...); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate is called by conf.Load and Load. It reports every zero or inconsistent value, naming the key.
func (c Config) Validate() error {
	var errs []error
	if err := consumer.CheckKq(c.Reports); err != nil {
		errs = append(errs, conffile.Prefixed("Reports", err))
	}
	if err := c.Pipeline.Validate(); err != nil {
		errs = append(errs, conffile.Prefixed("Pipeline", err))
	}
	// go-zero calls Stop after WrapUpTime and kills the process at WaitTime; Stop drains for up to
	// DrainTimeout, then commits and leaves the group.
	if drainEnds := c.Shutdown.WrapUpTime + c.Pipeline.DrainTimeout; c.Shutdown.WaitTime <= drainEnds {
		wait := c.Shutdown.WaitTime.String()
		if c.Shutdown.WaitTime == 0 {
			wait = "not set, so go-zero's 5.5s"
		}
		errs = append(errs, fmt.Errorf("Shutdown.WaitTime (%s) must exceed Shutdown.WrapUpTime + "+
			"Pipeline.DrainTimeout (%s), or go-zero kills epro-mq mid-drain: set Shutdown.WaitTime above %s",
			wait, drainEnds, drainEnds))
	}
	r := c.Retry
	if r.MaxAttempts <= 0 || r.InitialBackoff <= 0 || r.MaxBackoff < r.InitialBackoff || r.TransientMaxBackoff <= 0 {
		errs = append(errs, errors.New("Retry: need MaxAttempts > 0, 0 < InitialBackoff <= MaxBackoff and TransientMaxBackoff > 0"))
	}
	if c.DeadLetter.Topic == "" || c.DeadLetter.Topic == c.Reports.Topic {
		errs = append(errs, errors.New("DeadLetter.Topic must be set and differ from Reports.Topic"))
	}
	if err := c.DeadLetter.Producer.Validate(); err != nil {
		errs = append(errs, conffile.Prefixed("DeadLetter.Producer", err))
	}
	h := c.Health
	if h.Port < 0 || h.Port > 65535 || h.PingTimeout <= 0 || h.LagTimeout <= 0 {
		errs = append(errs, errors.New("Health: need 0 <= Port <= 65535 and positive PingTimeout and LagTimeout"))
	}
	if h.StallTimeout <= max(r.MaxBackoff, r.TransientMaxBackoff) {
		errs = append(errs, fmt.Errorf("Health.StallTimeout (%s) must exceed Retry.MaxBackoff and "+
			"Retry.TransientMaxBackoff, or a retried outage looks stuck", h.StallTimeout))
	}
	if c.MySQL.DSN == "" {
		errs = append(errs, errors.New("MySQL.DSN is empty (EPRO_MYSQL_DSN)"))
	}
	if c.MySQL.MaxOpenConns <= 0 {
		errs = append(errs, errors.New("MySQL.MaxOpenConns must be positive"))
	}
	if c.Redis.Timeout <= 0 || c.Redis.PoolSize <= 0 {
		errs = append(errs, errors.New("Redis: Timeout and PoolSize must be positive"))
	}
	return errors.Join(errs...)
}

// ineffectiveKeys load into kq.KqConf, or are a producer setting no longer read, and do nothing in epro-mq; Load
// refuses them whatever their value.
var ineffectiveKeys = func() []conffile.Ineffective {
	loop := "epro-mq runs its own consumer loop, one fetch loop per assigned partition"
	keys := []conffile.Ineffective{
		{Key: "Reports.Conns", Why: loop},
		{Key: "Reports.Consumers", Why: loop},
		{Key: "Reports.CommitInOrder", Why: "epro-mq always commits a partition in order, up to its lowest unfinished offset"},
		{Key: "Log.Stat", Why: "StatLog (default false) turns go-zero's stat log lines on"},
	}
	keys = append(keys, producer.Ineffective("DeadLetter.Producer")...)
	for _, k := range []string{"Log", "Mode", "MetricsUrl", "Prometheus", "Telemetry", "DevServer", "Shutdown", "Profiling"} {
		keys = append(keys, conffile.Ineffective{Key: "Reports." + k, Why: "only the top-level service settings apply"})
	}
	return keys
}()
