package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zeromicro/go-zero/core/conf"

	"github.com/epro-intake/dlq-worker/internal/config"
)

func TestShippedConfigLoads(t *testing.T) {
	t.Setenv("EPRO_DLQ_PORT", "8890")
	t.Setenv("EPRO_KAFKA_BROKERS", "k1:9092,k2:9092")
	t.Setenv("EPRO_MYSQL_DSN", "epro:epro@tcp(db:3306)/epro")
	t.Setenv("EPRO_DLQ_JWT_KEY", strings.Repeat("k", 32))
	c, err := config.Load(filepath.Join("..", "..", "etc", "dlq-worker.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 8890 || c.DeadLetters.Topic != "epro.reports.v1.dlq" || c.DeadLetters.Group != "dlq-worker" ||
		c.DeadLetters.StartOffset != "first" || c.DeadLetters.Commit != "after-insert" {
		t.Errorf("config = %+v", c)
	}
	if got := c.Replay.Producer.Brokers; len(got) != 2 || got[1] != "k2:9092" {
		t.Errorf("producer brokers = %v", got)
	}
	if len(c.Replay.AllowedTopics) != 1 || c.Replay.AllowedTopics[0] != "epro.reports.v1" {
		t.Errorf("allowed topics = %v", c.Replay.AllowedTopics)
	}
	if c.ServerConf().Middlewares.Log {
		t.Error("go-zero's log middleware (which logs bodies) is on")
	}
	// The shipped file picks OTLP; tracing stays off until Telemetry.Endpoint is set.
	if c.Telemetry.Batcher != "otlpgrpc" || c.Telemetry.Sampler != 1 || c.Telemetry.Endpoint != "" {
		t.Errorf("Telemetry = %+v", c.Telemetry)
	}
	// Tracing is off until Telemetry.Endpoint names a collector, and then on.
	if !c.ServerConf().Telemetry.Disabled {
		t.Error("go-zero's trace agent would start without an endpoint")
	}
	withEndpoint := c
	withEndpoint.Telemetry.Endpoint = "collector:4317"
	if withEndpoint.ServerConf().Telemetry.Disabled {
		t.Error("Telemetry.Endpoint set, tracing still off")
	}
	if c.Reconcile.Topic != "epro.reports.v1" || c.Reconcile.Group != "epro-mq" {
		t.Errorf("reconcile = %+v", c.Reconcile)
	}
}

// Every default is in a tag: a config naming only addresses and the key gets them all.
func TestDefaults(t *testing.T) {
	var c config.Config
	yaml := "Name: d\nPort: 1\nTimeout: 10000\nDeadLetters:\n  Brokers: [k:9092]\nReplay:\n  Producer:\n    Brokers: [k:9092]\n" +
		"MySQL:\n  DSN: x\nAuth:\n  Secret: " + strings.Repeat("k", 32) + "\n"
	if err := conf.LoadFromYamlBytes([]byte(yaml), &c); err != nil {
		t.Fatal(err)
	}
	d := c.DeadLetters
	if d.Topic != "epro.reports.v1.dlq" || d.Group != "dlq-worker" || d.StartOffset != "first" || d.Commit != "after-insert" ||
		d.MaxWait != 500*time.Millisecond || d.InsertTimeout != 5*time.Second {
		t.Errorf("consumer defaults = %+v", d)
	}
	b := c.Replay.Bulk
	if b.RatePerSecond != 10 || b.MaxItems != 10000 || b.PauseAfterFailures != 3 || b.PauseAfterRedeadLettered != 3 || b.CheckInterval != time.Second ||
		b.LeaseTTL != 30*time.Second || b.PollInterval != 2*time.Second || b.MaxConcurrentJobs != 2 {
		t.Errorf("bulk defaults = %+v", b)
	}
	if len(c.Replay.AllowedTopics) != 1 || c.Replay.AllowedTopics[0] != "epro.reports.v1" || c.Replay.Timeout != 5*time.Second {
		t.Errorf("replay defaults = %+v", c.Replay)
	}
	if c.MySQL.QueryTimeout != 3*time.Second || !c.MySQL.Migrate || c.Auth.MaxTTL != 720*time.Hour || c.List.MaxLimit != 200 {
		t.Errorf("defaults = %+v %+v %+v", c.MySQL, c.Auth, c.List)
	}
	if a := c.Auth; a.Mode != "hs256" || a.RoleClaim != "role" || a.SubjectClaim != "sub" || a.Leeway != 30*time.Second ||
		len(a.Algorithms) != 2 || a.RefreshInterval != 5*time.Minute {
		t.Errorf("auth defaults = %+v", a)
	}
	if r := c.Reconcile; r.Topic != "epro.reports.v1" || r.Group != "epro-mq" || r.BatchSize != 500 || r.MaxWait != 500*time.Millisecond ||
		r.QueryTimeout != 10*time.Second || r.Timeout != 2*time.Hour || r.MaxExceptions != 1000 {
		t.Errorf("reconcile defaults = %+v", r)
	}
	if p := c.Replay.Producer; p.BatchTimeout != time.Millisecond || p.WriteTimeout != 2*time.Second || p.MaxAttempts != 5 {
		t.Errorf("producer defaults = %+v", p)
	}
}

func TestValidate(t *testing.T) {
	base := "Name: d\nPort: 1\nTimeout: 10000\nDeadLetters:\n  Brokers: [k:9092]\nReplay:\n  Producer:\n    Brokers: [k:9092]\nMySQL:\n  DSN: x\n"
	for name, yaml := range map[string]string{
		"short key":          base + "Auth:\n  Secret: short\n",
		"empty brokers":      strings.Replace(base, "[k:9092]", "[]", 1) + "Auth:\n  Secret: " + strings.Repeat("k", 32) + "\n",
		"timeouts":           strings.Replace(base, "Timeout: 10000", "Timeout: 3000", 1) + "Auth:\n  Secret: " + strings.Repeat("k", 32) + "\n",
		"bad start offset":   strings.Replace(base, "[k:9092]", "[k:9092]\n  StartOffset: middle", 1) + "Auth:\n  Secret: " + strings.Repeat("k", 32) + "\n",
		"reconcile batch":    base + "Reconcile:\n  BatchSize: -1\nAuth:\n  Secret: " + strings.Repeat("k", 32) + "\n",
		"rate above maximum": strings.Replace(base, "Replay:\n", "Replay:\n  Bulk:\n    RatePerSecond: 500\n", 1) + "Auth:\n  Secret: " + strings.Repeat("k", 32) + "\n",
	} {
		var c config.Config
		if err := conf.LoadFromYamlBytes([]byte(yaml), &c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := os.Stat(filepath.Join("..", "..", "etc", "dlq-worker.yaml")); err != nil {
		t.Fatal(err)
	}
}

// A key that loads but does nothing is refused at start-up, whatever its value, with a message naming it;
// zero values are refused rather than replaced. Both through Load, the function main uses.
func TestLoadRefuses(t *testing.T) {
	key := strings.Repeat("k", 32)
	base := "Name: d\nPort: 1\nTimeout: 10000\nDeadLetters:\n  Brokers: [k:9092]\nReplay:\n  Producer:\n    Brokers: [k:9092]\n" +
		"MySQL:\n  DSN: x\nAuth:\n  Secret: " + key + "\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"valid", base, ""},
		{"valid oidc", strings.Replace(base, "  Secret: "+key+"\n", "  Mode: oidc\n  JWKSURL: https://idp.test/jwks\n  Issuer: https://idp.test\n  Audience: dlq-worker\n  RoleClaim: roles\n", 1), ""},
		{"short key", strings.Replace(base, key, "short", 1), "Auth.Secret must be at least 32 bytes"},
		{"oidc without issuer", strings.Replace(base, "  Secret: "+key+"\n", "  Mode: oidc\n  JWKSURL: https://idp.test/jwks\n  Audience: dlq-worker\n", 1), "Auth.JWKSURL, Issuer and Audience are required in oidc mode"},
		{"oidc with a key", strings.Replace(base, "  Secret: "+key+"\n", "  Mode: oidc\n  Secret: "+key+"\n  JWKSURL: https://idp.test/jwks\n  Issuer: https://idp.test\n  Audience: dlq-worker\n", 1), "Auth.Secret is set but does nothing in oidc mode"},
		{"oidc with HS256", strings.Replace(base, "  Secret: "+key+"\n", "  Mode: oidc\n  JWKSURL: https://idp.test/jwks\n  Issuer: https://idp.test\n  Audience: dlq-worker\n  Algorithms: [HS256]\n", 1), "Auth.Algorithms"},
		{"role in the subject claim", base + "  RoleClaim: sub\n", `Auth.RoleClaim "sub" names a registered claim or the subject claim`},
		{"hs256 with a JWKS URL", base + "  JWKSURL: https://idp.test/jwks\n", "Auth.JWKSURL is set but does nothing in hs256 mode"},
		{"log middleware on", base + "Middlewares:\n  Log: true\n", "Middlewares.Log has no effect"},
		{"log middleware off", base + "middlewares:\n  log: false\n", "Middlewares.Log has no effect"},
		{"no replay producer", strings.Replace(base, "  Producer:\n    Brokers: [k:9092]\n", "  Timeout: 5s\n", 1), "Producer"},
		{"zero producer attempts", strings.Replace(base, "    Brokers: [k:9092]\n", "    Brokers: [k:9092]\n    MaxAttempts: 0\n", 1), "Replay.Producer.MaxAttempts must be positive"},
		{"producer batch size", strings.Replace(base, "    Brokers: [k:9092]\n", "    Brokers: [k:9092]\n    BatchSize: 100\n", 1), "Replay.Producer.BatchSize has no effect"},
		{"producer batch timeout", strings.Replace(base, "    Brokers: [k:9092]\n", "    Brokers: [k:9092]\n    BatchTimeout: 0s\n", 1), "Replay.Producer.BatchTimeout must be positive"},
		{"zero insert timeout", strings.Replace(base, "  Brokers: [k:9092]\nReplay", "  Brokers: [k:9092]\n  InsertTimeout: 0s\nReplay", 1), "DeadLetters.InsertTimeout must be positive"},
		{"lease no longer than a produce", strings.Replace(base, "Replay:\n", "Replay:\n  Bulk:\n    LeaseTTL: 5s\n", 1), "Replay.Bulk.LeaseTTL (5s) must exceed Replay.Timeout (5s)"},
		{"jobs starve the pool", strings.Replace(base, "Replay:\n", "Replay:\n  Bulk:\n    MaxConcurrentJobs: 4\n", 1), "Replay.Bulk.MaxConcurrentJobs (4) must be positive and below half of MySQL.MaxOpenConns (8)"},
		{"heartbeat not below session", strings.Replace(base, "  Brokers: [k:9092]\nReplay", "  Brokers: [k:9092]\n  HeartbeatInterval: 10s\nReplay", 1), "DeadLetters.HeartbeatInterval (10s) must be below SessionTimeout (10s)"},
	} {
		file := filepath.Join(t.TempDir(), "dlq-worker.yaml")
		if err := os.WriteFile(file, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := config.Load(file)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: Load() = %v, want %q", tc.name, err, tc.want)
		}
	}
}
