package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zeromicro/go-zero/core/conf"

	"github.com/epro-intake/common/bearer"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/epro-api/internal/config"
)

// minimal is the smallest valid configuration: a development one, with a test key for its tokens.
const minimal = "Name: x\nPort: 1\nMode: test\nKafka:\n  Brokers: [k:9092]\nMySQL:\n  DSN: d\nRedis:\n  Addr: r:6379\n" +
	"Auth:\n  Secret: 0123456789abcdef0123456789abcdef\n"

func TestShippedConfig(t *testing.T) {
	t.Setenv("EPRO_API_JWT_KEY", "0123456789abcdef0123456789abcdef")
	t.Setenv("EPRO_API_PORT", "8080")
	t.Setenv("EPRO_KAFKA_BROKERS", "k1:9092,k2:9092")
	t.Setenv("EPRO_MYSQL_DSN", "epro:s3cret@tcp(db:3306)/epro")
	t.Setenv("EPRO_REDIS_ADDR", "redis:6379")
	t.Setenv("EPRO_REDIS_PASSWORD", "")
	c, err := config.Load("../../etc/epro-api.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Kafka.Brokers, " "); got != "k1:9092 k2:9092" {
		t.Errorf("brokers %q", got)
	}
	if c.Port != 8080 || c.MySQL.DSN != "epro:s3cret@tcp(db:3306)/epro" || c.Redis.Addr != "redis:6379" {
		t.Errorf("env not applied: %+v", c)
	}
	if c.CpuThreshold != 0 {
		t.Errorf("CpuThreshold %d: load shedding must stay off", c.CpuThreshold)
	}
	if c.Topic != report.Topic || c.ProduceTimeout != 2*time.Second || c.Kafka.BatchTimeout != time.Millisecond {
		t.Errorf("kafka settings %+v", c)
	}
	// The file leaves these to the tags; the per-request budget must hold the produce and Redis timeouts.
	if c.Timeout != 3000 || c.MaxConns != 10000 || c.Host != "0.0.0.0" || c.Kafka.WriteTimeout != 2*time.Second ||
		c.Kafka.MaxAttempts != 5 || c.Limits.MaxAge != 2160*time.Hour || c.Redis.Timeout != 250*time.Millisecond || c.Log.Encoding != "json" {
		t.Errorf("defaults not applied: %+v", c)
	}
	// The shipped file runs the development stack: hs256 tokens, accepted because Mode says dev.
	if c.Mode != "dev" || c.Auth.Mode != bearer.ModeHS256 || c.Auth.Secret != "0123456789abcdef0123456789abcdef" ||
		c.Auth.PatientClaim != "sub" || c.Auth.SubjectClaim != "sub" || c.Auth.TrialClaim != "" || c.Auth.MaxTTL != 720*time.Hour {
		t.Errorf("auth %+v in Mode %s", c.Auth, c.Mode)
	}
	sc := c.ServerConf()
	if sc.Middlewares.Log || sc.Middlewares.MaxBytes || sc.Middlewares.Breaker || sc.Middlewares.Gunzip || sc.Middlewares.MaxConns ||
		sc.Middlewares.Prometheus || sc.Middlewares.Metrics || !sc.Middlewares.Timeout || !sc.Middlewares.Trace {
		t.Errorf("middlewares %+v", sc.Middlewares)
	}
	// go-zero's stat lines stay off unless StatLog says otherwise.
	if c.StatLog || sc.Log.Stat {
		t.Errorf("StatLog %v, Log.Stat %v: the stat lines must be off by default", c.StatLog, sc.Log.Stat)
	}
	// The shipped file picks OTLP; tracing stays off until Telemetry.Endpoint is set.
	if c.Telemetry.Batcher != "otlpgrpc" || c.Telemetry.Sampler != 1 || c.Telemetry.Endpoint != "" {
		t.Errorf("Telemetry = %+v", c.Telemetry)
	}
	// Tracing is off until Telemetry.Endpoint names a collector, and then on.
	if !sc.Telemetry.Disabled {
		t.Error("go-zero's trace agent would start without an endpoint")
	}
	c.Telemetry.Endpoint = "collector:4317"
	if c.ServerConf().Telemetry.Disabled {
		t.Error("Telemetry.Endpoint set, tracing still off")
	}
}

// StatLog switches go-zero's stat lines (Log.Stat) and the request statistics they print (Middlewares.Metrics)
// together; go-zero's own default for Log.Stat is on.
func TestStatLogSwitch(t *testing.T) {
	for _, on := range []bool{false, true} {
		yaml := minimal
		if on {
			yaml += "StatLog: true\n"
		}
		file := filepath.Join(t.TempDir(), "epro-api.yaml")
		if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := config.Load(file)
		if err != nil {
			t.Fatal(err)
		}
		sc := c.ServerConf()
		if c.StatLog != on || sc.Log.Stat != on || sc.Middlewares.Metrics != on {
			t.Errorf("StatLog %v: Log.Stat %v, Middlewares.Metrics %v", c.StatLog, sc.Log.Stat, sc.Middlewares.Metrics)
		}
		if !c.Log.Stat {
			t.Error("go-zero's own Log.Stat default changed; the switch may no longer be needed")
		}
	}
}

func TestDefaults(t *testing.T) {
	var c config.Config
	yaml := minimal
	if err := conf.LoadFromYamlBytes([]byte(yaml), &c); err != nil {
		t.Fatal(err)
	}
	want := config.LimitsConf{MaxAge: 90 * 24 * time.Hour, MaxSkew: 10 * time.Minute, BodyBytes: 64 << 10, BatchBodyBytes: 2 << 20, BatchItems: 100}
	if c.Limits != want {
		t.Errorf("limits %+v", c.Limits)
	}
	if c.Topic != "epro.reports.v1" || c.ProduceTimeout != 2*time.Second || c.RetryAfter != 5 || c.Timeout != 3000 {
		t.Errorf("defaults %+v", c)
	}
	if c.Ready.Interval != time.Second || c.Ready.MaxAge != 3*time.Second || c.Redis.Timeout != 250*time.Millisecond || c.MySQL.QueryTimeout != time.Second ||
		c.MySQL.CheckTimeout != 200*time.Millisecond {
		t.Errorf("defaults %+v %+v %+v", c.Ready, c.Redis, c.MySQL)
	}
	if c.HTTP != (config.HTTPConf{ReadHeaderTimeout: 2 * time.Second, ReadTimeout: 2 * time.Second, IdleTimeout: 75 * time.Second, MaxHeaderBytes: 16 << 10}) {
		t.Errorf("http %+v", c.HTTP)
	}
	wantRL := config.RateLimitConf{PatientBurst: 500, PatientRate: 1, ClientBurst: 20000, ClientRate: 200,
		ForwardedForHops: 0, RedisTimeout: 50 * time.Millisecond, KeyPrefix: "epro:ratelimit", MaxKeys: 100000}
	if c.RateLimit != wantRL {
		t.Errorf("rate limit %+v", c.RateLimit)
	}
	// CORS is off unless origins are listed.
	if len(c.CORS.AllowOrigins) != 0 || c.CORS.MaxAge != 2*time.Hour {
		t.Errorf("cors %+v", c.CORS)
	}
	if c.Limits.Report() != (report.Limits{MaxAge: want.MaxAge, MaxSkew: want.MaxSkew}) {
		t.Errorf("report limits %+v", c.Limits.Report())
	}
}

func TestValidate(t *testing.T) {
	base := func() config.Config {
		var c config.Config
		yaml := minimal
		if err := conf.LoadFromYamlBytes([]byte(yaml), &c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, tc := range []struct {
		name   string
		change func(*config.Config)
		want   string
	}{
		{"valid", func(*config.Config) {}, ""},
		{"no brokers", func(c *config.Config) { c.Kafka.Brokers = nil }, "Kafka.Brokers"},
		{"empty broker", func(c *config.Config) { c.Kafka.Brokers = []string{""} }, "Kafka.Brokers"},
		{"no dsn", func(c *config.Config) { c.MySQL.DSN = "" }, "MySQL.DSN"},
		{"no redis", func(c *config.Config) { c.Redis.Addr = "" }, "Redis.Addr"},
		{"produce timeout at rest timeout", func(c *config.Config) { c.ProduceTimeout = 3 * time.Second }, "ProduceTimeout"},
		{"produce timeout plus redis over", func(c *config.Config) { c.ProduceTimeout = 2800 * time.Millisecond }, "ProduceTimeout"},
		{"no rest timeout", func(c *config.Config) { c.Timeout = 0; c.ProduceTimeout = 10 * time.Second }, ""},
		{"query timeout", func(c *config.Config) { c.MySQL.QueryTimeout = 3 * time.Second }, "QueryTimeout"},
		{"check timeout makes the path too long", func(c *config.Config) { c.MySQL.CheckTimeout = time.Second }, "MySQL.CheckTimeout"},
		{"zero check timeout", func(c *config.Config) { c.MySQL.CheckTimeout = 0 }, "CheckTimeout"},
		{"batch smaller than one", func(c *config.Config) { c.Limits.BatchBodyBytes = 1000 }, "Limits"},
		{"ready max age below interval", func(c *config.Config) { c.Ready.MaxAge = time.Millisecond }, "Ready"},
		{"zero producer attempts", func(c *config.Config) { c.Kafka.MaxAttempts = 0 }, "Kafka.MaxAttempts must be positive"},
		{"zero producer batch timeout", func(c *config.Config) { c.Kafka.BatchTimeout = 0 }, "Kafka.BatchTimeout must be positive"},
		{"zero redis timeout", func(c *config.Config) { c.Redis.Timeout = 0 }, "Redis"},
		{"zero mysql conns", func(c *config.Config) { c.MySQL.MaxOpenConns = 0 }, "MySQL"},
		{"no topic", func(c *config.Config) { c.Topic = "" }, "Topic"},
		{"read timeout at rest timeout", func(c *config.Config) { c.HTTP.ReadTimeout = 3 * time.Second }, "HTTP.ReadTimeout"},
		{"header timeout over read timeout", func(c *config.Config) { c.HTTP.ReadHeaderTimeout = 2500 * time.Millisecond }, "HTTP: need"},
		{"zero header timeout", func(c *config.Config) { c.HTTP.ReadHeaderTimeout = 0 }, "HTTP: need"},
		{"zero idle timeout", func(c *config.Config) { c.HTTP.IdleTimeout = 0 }, "HTTP: need"},
		{"zero max header bytes", func(c *config.Config) { c.HTTP.MaxHeaderBytes = 0 }, "HTTP.MaxHeaderBytes"},
		{"zero max conns", func(c *config.Config) { c.MaxConns = 0 }, "MaxConns"},
		{"short dev key", func(c *config.Config) { c.Auth.Secret = "short" }, "EPRO_API_JWT_KEY"},
		{"dev tokens in production", func(c *config.Config) { c.Mode = "pro" }, "Auth.Mode hs256 (development tokens) is refused in Mode pro"},
		{"dev tokens in pre-release", func(c *config.Config) { c.Mode = "pre" }, "refused in Mode pre"},
		{"oidc in production", func(c *config.Config) {
			c.Mode = "pro"
			c.Auth.Mode, c.Auth.Secret = bearer.ModeOIDC, ""
			c.Auth.JWKSURL, c.Auth.Issuer, c.Auth.Audience = "https://idp.test/jwks", "https://idp.test", "epro-api"
		}, ""},
		{"oidc without issuer", func(c *config.Config) {
			c.Auth.Mode, c.Auth.Secret, c.Auth.JWKSURL = bearer.ModeOIDC, "", "https://idp.test/jwks"
		}, "Auth.JWKSURL, Issuer and Audience"},
		{"no patient claim", func(c *config.Config) { c.Auth.PatientClaim = "" }, "PatientClaim"},
		{"patient claim exp", func(c *config.Config) { c.Auth.PatientClaim = "exp" }, "Auth.PatientClaim"},
		{"patient claim of its own", func(c *config.Config) { c.Auth.PatientClaim = "patient_id" }, ""},
		{"trial claim", func(c *config.Config) { c.Auth.TrialClaim = "trial_id" }, ""},
		{"trial claim is the patient claim", func(c *config.Config) { c.Auth.TrialClaim = "sub" }, "Auth.TrialClaim"},
		{"trial claim aud", func(c *config.Config) { c.Auth.TrialClaim = "aud" }, "Auth.TrialClaim"},
		{"patient burst below a batch", func(c *config.Config) { c.RateLimit.PatientBurst = 99 }, "PatientBurst (99)"},
		{"client burst below a batch", func(c *config.Config) { c.RateLimit.ClientBurst = 10 }, "ClientBurst (10)"},
		{"bursts fit smaller batches", func(c *config.Config) {
			c.Limits.BatchItems = 5
			c.RateLimit.PatientBurst = 5
			c.RateLimit.ClientBurst = 5
		}, ""},
		{"zero patient rate", func(c *config.Config) { c.RateLimit.PatientRate = 0 }, "PatientRate"},
		{"zero limiter redis timeout", func(c *config.Config) { c.RateLimit.RedisTimeout = 0 }, "RateLimit.RedisTimeout"},
		{"limiter redis timeout over budget", func(c *config.Config) { c.RateLimit.RedisTimeout = 800 * time.Millisecond }, "RateLimit.RedisTimeout+MySQL.CheckTimeout+ProduceTimeout"},
		{"no key prefix", func(c *config.Config) { c.RateLimit.KeyPrefix = "" }, "KeyPrefix"},
		{"cors origins", func(c *config.Config) {
			c.CORS.AllowOrigins = []string{"https://app.example.org", "http://localhost:5173"}
		}, ""},
		{"cors wildcard", func(c *config.Config) { c.CORS.AllowOrigins = []string{"*"} }, "CORS.AllowOrigins[0]"},
		{"cors origin with path", func(c *config.Config) { c.CORS.AllowOrigins = []string{"https://app.example.org/"} }, "CORS.AllowOrigins[0]"},
		{"cors origin uppercase", func(c *config.Config) { c.CORS.AllowOrigins = []string{"https://App.example.org"} }, "CORS.AllowOrigins[0]"},
		{"cors origin without scheme", func(c *config.Config) { c.CORS.AllowOrigins = []string{"app.example.org"} }, "CORS.AllowOrigins[0]"},
		{"cors zero max age", func(c *config.Config) {
			c.CORS.AllowOrigins = []string{"https://app.example.org"}
			c.CORS.MaxAge = 0
		}, "CORS.MaxAge"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.change(&c)
			err := c.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestEmptyEnvFailsToLoad(t *testing.T) {
	for _, k := range []string{"EPRO_API_PORT", "EPRO_KAFKA_BROKERS", "EPRO_MYSQL_DSN", "EPRO_REDIS_ADDR", "EPRO_REDIS_PASSWORD", "EPRO_API_JWT_KEY"} {
		t.Setenv(k, "")
	}
	t.Setenv("EPRO_API_PORT", "8080")
	if _, err := config.Load("../../etc/epro-api.yaml"); err == nil {
		t.Fatal("loaded without Kafka, MySQL and Redis addresses")
	}
	for _, k := range []string{"EPRO_KAFKA_BROKERS", "EPRO_MYSQL_DSN", "EPRO_REDIS_ADDR"} {
		t.Setenv(k, "x:1")
	}
	if _, err := config.Load("../../etc/epro-api.yaml"); err == nil || !strings.Contains(err.Error(), "EPRO_API_JWT_KEY") {
		t.Fatalf("loaded without a token key: %v", err)
	}
}

// A key that loads but does nothing is refused at start-up, whatever its value, with a message naming it.
func TestLoadRefusesKeysWithoutEffect(t *testing.T) {
	base := minimal
	for _, tc := range []struct{ yaml, want string }{
		{base, ""},
		{base + "Middlewares:\n  Log: true\n", "Middlewares.Log has no effect"},
		{base + "Middlewares:\n  MaxBytes: false\n", "Middlewares.MaxBytes has no effect"},
		{base + "middlewares:\n  breaker: true\n", "Middlewares.Breaker has no effect"},
		{base + "Middlewares:\n  Gunzip: false\n", "Middlewares.Gunzip has no effect"},
		{base + "MaxBytes: 1048576\n", "MaxBytes has no effect"},
		{base + "Middlewares:\n  MaxConns: true\n", "Middlewares.MaxConns has no effect"},
		{base + "Middlewares:\n  Prometheus: true\n", "Middlewares.Prometheus has no effect"},
		{base + "Middlewares:\n  Metrics: true\n", "Middlewares.Metrics has no effect"},
		{base + "Log:\n  Stat: true\n", "Log.Stat has no effect"},
		{strings.Replace(base, "Kafka:\n", "Kafka:\n  batchsize: 100\n", 1), "Kafka.BatchSize has no effect"},
		{strings.Replace(base, "Kafka:\n", "Kafka:\n  BatchTimeout: 2ms\n", 1), ""}, // honoured
		{base + "StatLog: true\n", ""},                            // the switch that replaces them
		{base + "MaxConns: 500\nHTTP:\n  IdleTimeout: 10s\n", ""}, // honoured: the connection cap and the server limits
		{base + "Middlewares:\n  Trace: false\n", ""},             // honoured: not refused
	} {
		file := filepath.Join(t.TempDir(), "epro-api.yaml")
		if err := os.WriteFile(file, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := config.Load(file)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%q: Load() = %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

// A file that does not say Mode is production (go-zero's default), where development tokens are refused.
func TestUnsetModeRefusesDevTokens(t *testing.T) {
	file := filepath.Join(t.TempDir(), "epro-api.yaml")
	if err := os.WriteFile(file, []byte(strings.Replace(minimal, "Mode: test\n", "", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(file); err == nil || !strings.Contains(err.Error(), "refused in Mode pro") {
		t.Fatalf("Load() = %v, want development tokens refused in Mode pro", err)
	}
}
