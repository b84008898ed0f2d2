// Package config is dlq-worker's configuration, loaded from etc/dlq-worker.yaml with addresses and secrets
// from the environment. Every default is stated in its tag, and every Kafka setting that shapes the delivery
// contract is stated even where it equals kafka-go's default.
package config

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/zeromicro/go-zero/rest"

	"github.com/epro-intake/common/bearer"
	"github.com/epro-intake/common/conffile"
	"github.com/epro-intake/common/producer"
)

// Config is dlq-worker's configuration: the ops API (RestConf), the dead-letter consumer and the replayer.
type Config struct {
	rest.RestConf

	// DeadLetters is the consumed dead-letter topic.
	DeadLetters ConsumerConf
	// Replay is how dead letters are re-produced to their source topic.
	Replay ReplayConf
	MySQL  MySQLConf
	Auth   AuthConf
	List   ListConf
	// Reconcile configures reconciliations of the report topic (`dlq-worker reconcile`, POST
	// /v1/reconciliations). They read the brokers of DeadLetters.
	Reconcile ReconcileConf
}

// ConsumerConf describes the one consumed topic. dlq-worker reads it with one sequential kafka-go Reader in a
// consumer group and commits each record only after its row is in MySQL: dead letters are rare, so one
// record at a time is plenty, and it makes "committed" mean "archived" without any offset bookkeeping.
type ConsumerConf struct {
	Brokers []string
	Topic   string `json:",default=epro.reports.v1.dlq"`
	Group   string `json:",default=dlq-worker"`
	// StartOffset applies when the group has no committed offset. kafka-go's default is first too; it is
	// stated because "last" would silently skip every dead letter written before the group first joined.
	StartOffset string `json:",default=first,options=first|last"`
	// Commit documents the commit mode; only after-insert exists: a synchronous CommitMessages after the
	// MySQL insert of that record (kafka-go CommitInterval 0). Auto-commit would lose dead letters that were
	// fetched but not yet stored when the process died.
	Commit   string `json:",default=after-insert,options=after-insert"`
	MinBytes int    `json:",default=1"`
	MaxBytes int    `json:",default=10485760"`
	// MaxWait bounds how long a fetch waits for MinBytes (kafka-go default 10s), so Stop is prompt.
	MaxWait time.Duration `json:",default=500ms"`
	// SessionTimeout, RebalanceTimeout and HeartbeatInterval are kafka-go's group timings (defaults 30s, 30s,
	// 3s); shorter ones hand partitions over faster after a crash.
	SessionTimeout    time.Duration `json:",default=10s"`
	RebalanceTimeout  time.Duration `json:",default=20s"`
	HeartbeatInterval time.Duration `json:",default=3s"`
	// InsertTimeout bounds one MySQL insert; failed inserts are retried with backoff up to MaxBackoff until
	// they succeed or the process stops, and the record stays uncommitted meanwhile.
	InsertTimeout time.Duration `json:",default=5s"`
	MaxBackoff    time.Duration `json:",default=5s"`
}

// ReplayConf configures replays, single and bulk.
type ReplayConf struct {
	// Producer writes replays with acks=all and murmur2 partitioning by key (common/producer; those are not
	// settings). It is required: go-zero fills no tag defaults into an optional block that is left out.
	Producer producer.Conf
	// AllowedTopics are the only topics a replay may write to, whatever a dead letter's original-topic header
	// says: a forged header must not let the replayer write anywhere else.
	AllowedTopics []string `json:",default=[epro.reports.v1]"`
	// Timeout bounds one replay's produce, retries included.
	Timeout time.Duration `json:",default=5s"`
	Bulk    BulkConf
}

// BulkConf shapes bulk replay jobs.
type BulkConf struct {
	// RatePerSecond is the default replay rate of a job; a request may ask for less, or more up to
	// MaxRatePerSecond.
	RatePerSecond    float64 `json:",default=10"`
	MaxRatePerSecond float64 `json:",default=100"`
	// MaxItems caps the dead letters one job takes on.
	MaxItems int `json:",default=10000"`
	// PauseAfterFailures pauses a job after this many replays in a row could not be produced.
	PauseAfterFailures int `json:",default=3"`
	// PauseAfterRedeadLettered pauses a job once this many of its replays came back as new dead letters
	// (x-replay-of naming one of its dead letters): the cause is not fixed.
	PauseAfterRedeadLettered int `json:",default=3"`
	// CheckInterval is how often a running job renews its lease, sees an operator's pause or cancel while it
	// waits for its next slot, and counts its replays that came back.
	CheckInterval time.Duration `json:",default=1s"`
	// LeaseTTL is how long a replica's hold on a job lasts without renewal: after a crash, another replica (or
	// the restarted one) continues the job once it expired. It must exceed Replay.Timeout, so a produce
	// cannot land after another replica looked for it. A graceful stop releases the lease at once.
	LeaseTTL time.Duration `json:",default=30s"`
	// PollInterval is how often a replica looks for running jobs without a live lease.
	PollInterval time.Duration `json:",default=2s"`
	// MaxConcurrentJobs caps the jobs one replica runs at once; others wait, still running, for a free slot
	// here or on another replica. A job's replay holds two MySQL connections at a time (the dead letter's
	// lock and the item's mark), so twice this must stay below MySQL.MaxOpenConns.
	MaxConcurrentJobs int `json:",default=2"`
}

// MySQLConf configures the archive database, which also holds epro-mq's reports table.
type MySQLConf struct {
	// DSN in go-sql-driver form. parseTime=true, loc=UTC and timeTruncate=1us are forced in code (mysqldb.Open).
	DSN          string
	MaxOpenConns int `json:",default=8"`
	// Migrate applies dlq-worker's pending migrations at start.
	Migrate bool `json:",default=true"`
	// QueryTimeout bounds each query of an API request.
	QueryTimeout time.Duration `json:",default=3s"`
}

// AuthConf configures bearer tokens (common/bearer): JWTs with a subject (the actor), a role claim (reviewer
// or operator) and exp. Mode hs256 (the default, for development) checks them against Secret
// (EPRO_DLQ_JWT_KEY); mode oidc against the keys of an OpenID Connect issuer (JWKSURL, Issuer, Audience).
type AuthConf struct {
	bearer.Conf
	// RoleClaim names the claim holding the role, a string or an array of strings. The token command
	// writes its role there.
	RoleClaim string `json:",default=role"`
	// MaxTTL caps the lifetime of tokens minted by the token command.
	MaxTTL time.Duration `json:",default=720h"`
}

// ReconcileConf configures reconciliations (internal/reconcile).
type ReconcileConf struct {
	// Topic is the report topic; Group is epro-mq's consumer group, whose committed offsets end a run by
	// default (only read, never committed).
	Topic string `json:",default=epro.reports.v1"`
	Group string `json:",default=epro-mq"`
	// BatchSize records are looked up in MySQL together; it also bounds the memory of a run.
	BatchSize int `json:",default=500"`
	// MaxWait bounds one fetch from a partition (kafka-go's default is 10s).
	MaxWait time.Duration `json:",default=500ms"`
	// QueryTimeout bounds each MySQL query and Kafka metadata request of a run.
	QueryTimeout time.Duration `json:",default=10s"`
	// Timeout bounds a run started through the API; the command runs until done or interrupted.
	Timeout time.Duration `json:",default=2h"`
	// MaxExceptions is how many exceptions a run started through the API keeps for GET; the counts are
	// always complete. The command writes every exception.
	MaxExceptions int `json:",default=1000"`
	// MaxRedrive is how many missing records one run keeps for a re-drive (`reconcile -redrive`, POST
	// /v1/reconciliations/:id/redrive): positions and request ids only. Those beyond it are counted as not
	// tried, and a later run finds them again.
	MaxRedrive int `json:",default=10000"`
	// RedriveRatePerSecond caps re-drives, so a long missing list cannot flood epro-mq.
	RedriveRatePerSecond float64 `json:",default=10"`
	// RedriveTimeout bounds reading one missing record back from Kafka and producing its re-drive.
	RedriveTimeout time.Duration `json:",default=10s"`
}

// Validate reports zero values, naming the key.
func (c ReconcileConf) Validate() error {
	if c.Topic == "" || c.Group == "" || c.BatchSize <= 0 || c.MaxWait <= 0 || c.QueryTimeout <= 0 || c.Timeout <= 0 || c.MaxExceptions <= 0 ||
		c.MaxRedrive <= 0 || c.RedriveRatePerSecond <= 0 || c.RedriveTimeout <= 0 {
		return errors.New("Reconcile: Topic and Group must be set; BatchSize, MaxWait, QueryTimeout, Timeout, MaxExceptions, " +
			"MaxRedrive, RedriveRatePerSecond and RedriveTimeout must be positive")
	}
	return nil
}

// ListConf bounds list pages.
type ListConf struct {
	DefaultLimit int `json:",default=50"`
	MaxLimit     int `json:",default=200"`
}

// Validate is called by conf.Load and Load. It reports every zero or inconsistent value, naming the key.
func (c Config) Validate() error {
	var errs []error
	if err := c.DeadLetters.Validate(); err != nil {
		errs = append(errs, conffile.Prefixed("DeadLetters", err))
	}
	if err := c.Replay.Producer.Validate(); err != nil {
		errs = append(errs, conffile.Prefixed("Replay.Producer", err))
	}
	if c.Replay.Timeout <= 0 {
		errs = append(errs, errors.New("Replay.Timeout must be positive"))
	}
	if c.MySQL.MaxOpenConns <= 0 || c.MySQL.QueryTimeout <= 0 {
		errs = append(errs, errors.New("MySQL: MaxOpenConns and QueryTimeout must be positive"))
	}
	if c.MySQL.DSN == "" {
		errs = append(errs, errors.New("MySQL.DSN is empty (EPRO_MYSQL_DSN)"))
	}
	if err := c.Auth.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(c.Replay.AllowedTopics) == 0 {
		errs = append(errs, errors.New("Replay.AllowedTopics is empty: nothing could be replayed"))
	}
	b := c.Replay.Bulk
	if b.RatePerSecond <= 0 || b.MaxRatePerSecond < b.RatePerSecond {
		errs = append(errs, errors.New("Replay.Bulk: need 0 < RatePerSecond <= MaxRatePerSecond"))
	}
	if b.MaxItems <= 0 || b.PauseAfterFailures <= 0 || b.PauseAfterRedeadLettered <= 0 || b.CheckInterval <= 0 ||
		b.PollInterval <= 0 {
		errs = append(errs, errors.New("Replay.Bulk: MaxItems, PauseAfterFailures, PauseAfterRedeadLettered, CheckInterval and PollInterval must be positive"))
	}
	if b.MaxConcurrentJobs <= 0 || 2*b.MaxConcurrentJobs >= c.MySQL.MaxOpenConns {
		errs = append(errs, fmt.Errorf("Replay.Bulk.MaxConcurrentJobs (%d) must be positive and below half of MySQL.MaxOpenConns (%d)",
			b.MaxConcurrentJobs, c.MySQL.MaxOpenConns))
	}
	if b.LeaseTTL <= c.Replay.Timeout || b.LeaseTTL <= b.CheckInterval {
		errs = append(errs, fmt.Errorf("Replay.Bulk.LeaseTTL (%s) must exceed Replay.Timeout (%s) and Replay.Bulk.CheckInterval (%s)",
			b.LeaseTTL, c.Replay.Timeout, b.CheckInterval))
	}
	if err := c.Reconcile.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.List.DefaultLimit <= 0 || c.List.MaxLimit < c.List.DefaultLimit {
		errs = append(errs, errors.New("List: need 0 < DefaultLimit <= MaxLimit"))
	}
	if c.Timeout > 0 {
		rest := time.Duration(c.Timeout) * time.Millisecond
		if c.Replay.Timeout+c.MySQL.QueryTimeout >= rest {
			errs = append(errs, fmt.Errorf("Replay.Timeout+MySQL.QueryTimeout (%s) must be below Timeout (%s)",
				c.Replay.Timeout+c.MySQL.QueryTimeout, rest))
		}
	}
	return errors.Join(errs...)
}

// Validate reports every zero or inconsistent value in c, naming its field; consumer.New refuses such a c.
func (c ConsumerConf) Validate() error {
	var errs []error
	if len(producer.SplitBrokers(c.Brokers)) == 0 {
		errs = append(errs, errors.New("Brokers is empty (EPRO_KAFKA_BROKERS)"))
	}
	if c.Topic == "" || c.Group == "" {
		errs = append(errs, errors.New("Topic and Group must be set"))
	}
	if c.StartOffset != "first" && c.StartOffset != "last" {
		errs = append(errs, fmt.Errorf("StartOffset %q must be first or last", c.StartOffset))
	}
	if c.Commit != "after-insert" {
		errs = append(errs, fmt.Errorf("Commit %q must be after-insert", c.Commit))
	}
	if c.MinBytes <= 0 || c.MaxBytes < c.MinBytes {
		errs = append(errs, fmt.Errorf("MinBytes (%d) must be positive and at most MaxBytes (%d)", c.MinBytes, c.MaxBytes))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"MaxWait", c.MaxWait}, {"SessionTimeout", c.SessionTimeout}, {"RebalanceTimeout", c.RebalanceTimeout},
		{"HeartbeatInterval", c.HeartbeatInterval}, {"InsertTimeout", c.InsertTimeout}, {"MaxBackoff", c.MaxBackoff}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive", d.name))
		}
	}
	if c.HeartbeatInterval >= c.SessionTimeout {
		errs = append(errs, fmt.Errorf("HeartbeatInterval (%s) must be below SessionTimeout (%s), or the group "+
			"drops this member between heartbeats", c.HeartbeatInterval, c.SessionTimeout))
	}
	return errors.Join(errs...)
}

// Validate checks the mode's settings, RoleClaim and MaxTTL.
func (a AuthConf) Validate() error {
	var errs []error
	if err := a.Conf.Validate(); err != nil {
		errs = append(errs, conffile.Prefixed("Auth", err))
		if a.Mode == bearer.ModeHS256 && len(a.Secret) < bearer.MinSecretBytes {
			errs = append(errs, errors.New("Auth.Secret comes from EPRO_DLQ_JWT_KEY"))
		}
	}
	if a.RoleClaim == "" || a.MaxTTL <= 0 {
		errs = append(errs, errors.New("Auth: need a RoleClaim and MaxTTL > 0"))
	}
	if slices.Contains([]string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", a.SubjectClaim}, a.RoleClaim) {
		errs = append(errs, fmt.Errorf("Auth.RoleClaim %q names a registered claim or the subject claim", a.RoleClaim))
	}
	return errors.Join(errs...)
}

// Load reads file as dlq-worker's main does: ${VAR} references are expanded from the environment (as
// conf.UseEnv does), keys that would have no effect are refused, tag defaults are filled in and Validate runs.
func Load(file string) (Config, error) {
	var c Config
	if err := conffile.Load(file, &c, "dlq-worker", ineffectiveKeys...); err != nil {
		return Config{}, err
	}
	return c, nil
}

// ineffectiveKeys load but do nothing in dlq-worker; Load refuses them whatever their value.
var ineffectiveKeys = append(producer.Ineffective("Replay.Producer"), conffile.Ineffective{
	Key: "Middlewares.Log", Why: "go-zero's log middleware is always off, see config.ServerConf; internal/middleware.AccessLog logs requests",
})

// ServerConf is the RestConf to build the server with. go-zero's Log middleware dumps the first KiB of the
// request body into the error log on any 5xx; bodies here hold discard notes that may quote patients, so it is
// off and internal/middleware.AccessLog logs instead. Tracing is off unless Telemetry.Endpoint names a
// collector: go-zero would otherwise record every span and export none.
func (c Config) ServerConf() rest.RestConf {
	rc := c.RestConf
	rc.Middlewares.Log = false
	rc.Telemetry.Disabled = rc.Telemetry.Disabled || rc.Telemetry.Endpoint == ""
	return rc
}
