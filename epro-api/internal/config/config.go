// Package config is epro-api's configuration. Every default is stated once, in its tag (or go-zero's); the
// constructors refuse zero values instead of filling in their own, and Validate checks the settings that are
// only right relative to each other. Addresses and secrets come from the environment through
// etc/epro-api.yaml. Keys that would load but have no effect are refused by Load.
package config

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/zeromicro/go-zero/core/service"
	"github.com/zeromicro/go-zero/rest"

	"github.com/epro-intake/common/bearer"
	"github.com/epro-intake/common/conffile"
	"github.com/epro-intake/common/producer"
	"github.com/epro-intake/common/report"
)

type Config struct {
	rest.RestConf

	// Kafka is the producer for the report topic: acks=all, murmur2 by key, synchronous (see common/producer;
	// those are not settings).
	Kafka producer.Conf
	// Topic receives every accepted report, keyed by patientId.
	Topic string `json:",default=epro.reports.v1"`
	// ProduceTimeout bounds one Send, retries included. It must stay below RestConf.Timeout so that the client
	// gets our 503 with Retry-After rather than go-zero's timeout answer.
	ProduceTimeout time.Duration `json:",default=2s"`
	// RetryAfter is the Retry-After (seconds) sent with every 503.
	RetryAfter int `json:",default=5,range=[1:3600]"`

	Limits LimitsConf
	// HTTP holds the net/http.Server limits against slow and greedy clients (see handler.ServerLimits).
	HTTP HTTPConf

	MySQL MySQLConf
	Redis RedisConf

	Ready ReadyConf

	// Auth checks the patients' bearer tokens on every /v1/reports route. Development tokens (Auth.Mode
	// hs256) are refused unless go-zero's Mode says dev or test: Mode is the production switch, and its
	// default, pro, is production.
	Auth AuthConf
	// RateLimit caps how many reports a patient and a client may submit (see internal/ratelimit).
	RateLimit RateLimitConf
	// CORS lets listed web origins call the API from a browser; off when no origin is listed.
	CORS CORSConf

	// StatLog turns on go-zero's periodic stat log lines: the minutely "CPU: …, MEMORY: …" line and the
	// "(epro-api) - qps: …" line of its request statistics. Off by default: /metrics has the same figures
	// and more. It replaces go-zero's Log.Stat and Middlewares.Metrics (see ServerConf).
	StatLog bool `json:",default=false"`
}

// AuthConf configures patients' bearer tokens (common/bearer): JWTs whose PatientClaim names the patient
// every report must belong to. Mode oidc (production) checks them against the keys of an OpenID Connect
// issuer (JWKSURL, Issuer, Audience); mode hs256 (development only, see Config.Auth) against Secret
// (EPRO_API_JWT_KEY), and `epro-api token` mints them. The token's iss and SubjectClaim are recorded with each
// report as its sender.
type AuthConf struct {
	bearer.Conf
	// PatientClaim names the claim holding the patient id a token speaks for: a report is accepted only when
	// its patientId equals it, and a report's status is shown only to it.
	PatientClaim string `json:",default=sub"`
	// TrialClaim, when set, names a claim restricting a token to one trial: a report is accepted only when its
	// trialId equals it (403 TRIAL_MISMATCH otherwise), and tokens without the claim are refused.
	TrialClaim string `json:",optional"`
	// MaxTTL caps the lifetime of tokens minted by the token command.
	MaxTTL time.Duration `json:",default=720h"`
}

// devModes are the go-zero Modes in which development tokens are accepted.
var devModes = []string{service.DevMode, service.TestMode}

// Validate reports every missing or inconsistent Auth value, naming the key; mode is go-zero's Mode.
func (a AuthConf) Validate(mode string) error {
	var errs []error
	if err := a.Conf.Validate(); err != nil {
		errs = append(errs, conffile.Prefixed("Auth", err))
		if a.Mode == bearer.ModeHS256 && len(a.Secret) < bearer.MinSecretBytes {
			errs = append(errs, errors.New("Auth.Secret comes from EPRO_API_JWT_KEY"))
		}
	}
	if a.Mode == bearer.ModeHS256 && !slices.Contains(devModes, mode) {
		errs = append(errs, fmt.Errorf("Auth.Mode hs256 (development tokens) is refused in Mode %s: production takes Auth.Mode oidc; "+
			"a development stack sets Mode: dev", mode))
	}
	if a.PatientClaim == "" || a.MaxTTL <= 0 {
		errs = append(errs, errors.New("Auth: need a PatientClaim and MaxTTL > 0"))
	}
	registered := []string{"iss", "aud", "exp", "nbf", "iat", "jti"}
	if slices.Contains(registered, a.PatientClaim) {
		errs = append(errs, fmt.Errorf("Auth.PatientClaim %q names a registered claim other than sub", a.PatientClaim))
	}
	if a.TrialClaim != "" && (slices.Contains(registered, a.TrialClaim) || a.TrialClaim == "sub" ||
		a.TrialClaim == a.PatientClaim || a.TrialClaim == a.SubjectClaim) {
		errs = append(errs, fmt.Errorf("Auth.TrialClaim %q names a registered claim, the patient claim or the subject claim", a.TrialClaim))
	}
	return errors.Join(errs...)
}

// RateLimitConf sizes the token buckets of internal/ratelimit: a report takes one token, a batch one per
// valid report it holds. A bucket holds Burst tokens and refills Rate tokens per second (counted in whole
// seconds, as go-zero's TokenLimiter counts them, so 1 is the slowest refill). The buckets live in Redis
// (Redis.Addr, Redis.DB: the status cache's, whose receipts the same call reads) and are shared by every
// replica; while Redis is down each replica keeps its own, so the limits then apply per replica.
//
// The defaults are generous on purpose: a patient's app may hold a week of questionnaires or more while
// offline (diary trials ask several times a day) and send them at once, as batches or one by one; that must
// never be refused. The limits are there to stop a runaway app or a script, not to pace patients.
type RateLimitConf struct {
	// PatientBurst is how many reports one patientId may send at once: several weeks of an intensive diary
	// (ten questionnaires a day is about 70 a week), so a week offline always fits.
	PatientBurst int `json:",default=500,range=[1:1000000]"`
	// PatientRate is the refill per second per patient; 1/s is 86,400 a day, far above any schedule.
	PatientRate int `json:",default=1,range=[1:1000000]"`
	// ClientBurst is how many reports one client may send at once. A client is, until tokens carry a client
	// id, one remote IP address (an IPv6 /64): a clinic's Wi-Fi or a carrier's NAT puts many patients behind
	// one address, so this allows many patients' offline weeks at once.
	ClientBurst int `json:",default=20000,range=[1:10000000]"`
	// ClientRate is the refill per second per client.
	ClientRate int `json:",default=200,range=[1:1000000]"`
	// ForwardedForHops is how many proxies we run in front of the API. 0 (the default) keys clients by the
	// connection's remote address and ignores X-Forwarded-For, which any client can write. With n > 0 the
	// client is the n-th address from the right of X-Forwarded-For, the one our outermost proxy saw.
	ForwardedForHops int `json:",default=0,range=[0:10]"`
	// RedisTimeout bounds the one Redis call a submission makes before it is produced (its buckets and its
	// request ids' receipts), queueing behind other requests' pipeline included. A call that takes longer
	// counts as Redis being down: the request is judged by the in-process buckets and its request ids by
	// MySQL instead of waiting, and later requests skip Redis until it answers a ping again. So a Redis outage
	// adds at most this to a request.
	RedisTimeout time.Duration `json:",default=50ms"`
	// KeyPrefix namespaces the bucket keys, for a Redis shared with other deployments.
	KeyPrefix string `json:",default=epro:ratelimit"`
	// MaxKeys bounds the buckets each replica keeps in memory (patients plus clients seen recently); the
	// least recently used is dropped beyond it. Only the local fallback state is lost with it.
	MaxKeys int `json:",default=100000,range=[1:10000000]"`
}

// CORSConf is the cross-origin policy for web-based patient apps. Native apps do not need it.
type CORSConf struct {
	// AllowOrigins lists the exact origins (scheme://host[:port]) whose pages may call the API. Empty (the
	// default) turns CORS off: no response carries CORS headers and browsers refuse cross-origin calls.
	// "*" is refused: the API takes patient data and bearer tokens.
	AllowOrigins []string `json:",optional"`
	// MaxAge is how long a browser may cache a preflight answer (Access-Control-Max-Age). Chromium caps it at
	// 2h.
	MaxAge time.Duration `json:",default=2h"`
}

type LimitsConf struct {
	// MaxAge is how old submittedAt may be. Phones without network keep reports for weeks and sync later, so
	// this is generous.
	MaxAge time.Duration `json:",default=2160h"`
	// MaxSkew is how far ahead of our clock submittedAt may be, for device clocks that run fast.
	MaxSkew time.Duration `json:",default=10m"`
	// BodyBytes caps the body of POST /v1/reports and each item of a batch.
	BodyBytes int64 `json:",default=65536"`
	// BatchBodyBytes caps the body of POST /v1/reports/batch.
	BatchBodyBytes int64 `json:",default=2097152"`
	// BatchItems caps the reports in one batch.
	BatchItems int `json:",default=100,range=[1:1000]"`
}

// HTTPConf bounds what one connection may hold. go-zero sets only ReadTimeout (0.8 × Timeout) and WriteTimeout
// (1.1 × Timeout) on its http.Server, so without these a client that sends headers slowly held a connection and a
// goroutine for as long as ReadTimeout, an idle keep-alive connection the same, and a header could be 1 MiB.
// The open-connection cap is RestConf.MaxConns (see handler.ServerLimits).
type HTTPConf struct {
	// ReadHeaderTimeout bounds reading the request line and headers, which fit in one packet for any client.
	ReadHeaderTimeout time.Duration `json:",default=2s"`
	// ReadTimeout bounds reading the whole request, headers and body, from the first byte of the request. The
	// handlers read the body inside go-zero's Timeout, so it must be below Timeout: a body that has not arrived
	// by then is answered 408 TIMEOUT (the client was slow) rather than 503 (as if we were). 2 s carries a
	// 2 MiB batch at 8 Mbit/s; a slower app sends gzip or smaller batches.
	ReadTimeout time.Duration `json:",default=2s"`
	// IdleTimeout closes a keep-alive connection with no request for this long. Longer than the usual 60 s of a
	// load balancer in front would keep it from reusing a connection we are closing.
	IdleTimeout time.Duration `json:",default=75s"`
	// MaxHeaderBytes caps the request line and headers (net/http adds 4 KiB of slack); beyond it the answer is
	// 431. A bearer token and the usual headers fit in a few KiB; net/http's default is 1 MiB.
	MaxHeaderBytes int `json:",default=16384"`
}

type MySQLConf struct {
	// DSN in go-sql-driver form. parseTime=true and loc=UTC are forced whatever it says, because the reports
	// table holds UTC DATETIME(6) values.
	DSN string
	// QueryTimeout bounds the status lookup.
	QueryTimeout time.Duration `json:",default=1s"`
	// CheckTimeout bounds the lookup of stored request ids before a report is produced. Short, because it
	// sits in the path of every submission Redis knows nothing of; when it runs out the report is produced
	// anyway, and epro-mq tells a duplicate from a conflict.
	CheckTimeout time.Duration `json:",default=200ms"`
	MaxOpenConns int           `json:",default=16"`
	MaxIdleConns int           `json:",default=16"`
}

type RedisConf struct {
	Addr     string
	Password string `json:",optional"`
	DB       int    `json:",default=0"`
	// Timeout bounds each Redis call of the status cache: the status lookup, and each pipeline of the
	// best-effort status writes sent after a 202 (off the request's path).
	Timeout time.Duration `json:",default=250ms"`
	// PoolSize is the status cache client's go-redis pool (its default is 10 per CPU; stated because it caps
	// the status lookups in flight). The writes after a 202 take one connection, pipelined; the call before
	// the produce has a client of its own (internal/ratelimit).
	PoolSize int `json:",default=64"`
}

type ReadyConf struct {
	// Interval between Kafka pings.
	Interval time.Duration `json:",default=1s"`
	// MaxAge is how old the last successful ping may be for /readyz to answer 200.
	MaxAge time.Duration `json:",default=3s"`
}

// Load reads file as epro-api's main does: ${VAR} references are expanded from the environment (as
// conf.UseEnv does), keys that would have no effect are refused, tag defaults are filled in and Validate runs.
func Load(file string) (Config, error) {
	var c Config
	if err := conffile.Load(file, &c, "epro-api", ineffectiveKeys...); err != nil {
		return Config{}, err
	}
	return c, nil
}

// ineffectiveKeys load but do nothing in epro-api: the middlewares ServerConf turns off or sets, the limit only
// one of them reads, the stat switch StatLog replaces, and the producer setting it no longer reads. Load
// refuses them whatever their value.
var ineffectiveKeys = append(producer.Ineffective("Kafka"), []conffile.Ineffective{
	{Key: "Middlewares.Log", Why: "the middleware is always off, see config.ServerConf"},
	{Key: "Middlewares.MaxBytes", Why: "the middleware is always off, see config.ServerConf"},
	{Key: "Middlewares.Breaker", Why: "the middleware is always off, see config.ServerConf"},
	{Key: "Middlewares.MaxConns", Why: "the middleware is always off, see config.ServerConf; MaxConns caps open connections instead"},
	{Key: "Middlewares.Gunzip", Why: "the middleware is always off, see config.ServerConf; the handlers decode gzip"},
	{Key: "Middlewares.Prometheus", Why: "the middleware is always off, see config.ServerConf; /metrics serves epro-api's own metrics"},
	{Key: "Middlewares.Metrics", Why: "StatLog switches it, see config.ServerConf"},
	{Key: "Log.Stat", Why: "StatLog switches it, see config.ServerConf"},
	{Key: "MaxBytes", Why: "only go-zero's MaxBytes middleware reads it, which is off; body limits are Limits.BodyBytes and Limits.BatchBodyBytes"},
}...)

// Validate is called by conf.Load and Load. It reports every zero or inconsistent value, naming the key.
func (c Config) Validate() error {
	var errs []error
	if err := c.Kafka.Validate(); err != nil {
		errs = append(errs, conffile.Prefixed("Kafka", err))
	}
	if c.Topic == "" {
		errs = append(errs, errors.New("Topic is empty"))
	}
	if c.MySQL.DSN == "" {
		errs = append(errs, errors.New("MySQL.DSN is empty (EPRO_MYSQL_DSN)"))
	}
	if c.Redis.Addr == "" {
		errs = append(errs, errors.New("Redis.Addr is empty (EPRO_REDIS_ADDR)"))
	}
	if c.ProduceTimeout <= 0 {
		errs = append(errs, errors.New("ProduceTimeout must be positive"))
	}
	if c.MySQL.QueryTimeout <= 0 || c.MySQL.CheckTimeout <= 0 || c.MySQL.MaxOpenConns <= 0 || c.MySQL.MaxIdleConns < 0 {
		errs = append(errs, errors.New("MySQL: QueryTimeout, CheckTimeout and MaxOpenConns must be positive, MaxIdleConns not negative"))
	}
	if c.Redis.Timeout <= 0 || c.Redis.PoolSize <= 0 {
		errs = append(errs, errors.New("Redis: Timeout and PoolSize must be positive"))
	}
	if c.Limits.MaxAge <= 0 || c.Limits.MaxSkew < 0 {
		errs = append(errs, errors.New("Limits: need MaxAge > 0 and MaxSkew >= 0"))
	}
	if c.Timeout > 0 {
		restTimeout := time.Duration(c.Timeout) * time.Millisecond
		// A submission asks Redis (one call, buckets and receipts, RateLimit.RedisTimeout), then MySQL when
		// Redis could not settle its request ids, then Kafka, one after the other; the status writes after the
		// 202 are off its path.
		if path := c.RateLimit.RedisTimeout + c.MySQL.CheckTimeout + c.ProduceTimeout; path >= restTimeout {
			errs = append(errs, fmt.Errorf("RateLimit.RedisTimeout+MySQL.CheckTimeout+ProduceTimeout (%s) must be below Timeout (%s)",
				path, restTimeout))
		}
		if c.MySQL.QueryTimeout+c.Redis.Timeout >= restTimeout {
			errs = append(errs, fmt.Errorf("MySQL.QueryTimeout+Redis.Timeout (%s) must be below Timeout (%s)",
				c.MySQL.QueryTimeout+c.Redis.Timeout, restTimeout))
		}
		// The handlers read the body inside go-zero's Timeout: a body still arriving at Timeout would get a
		// 503 with Retry-After, as if the server were slow, instead of the 408 that ReadTimeout leads to.
		if c.HTTP.ReadTimeout >= restTimeout {
			errs = append(errs, fmt.Errorf("HTTP.ReadTimeout (%s) must be below Timeout (%s)", c.HTTP.ReadTimeout, restTimeout))
		}
	}
	if c.HTTP.ReadHeaderTimeout <= 0 || c.HTTP.ReadTimeout < c.HTTP.ReadHeaderTimeout || c.HTTP.IdleTimeout <= 0 {
		errs = append(errs, errors.New("HTTP: need 0 < ReadHeaderTimeout <= ReadTimeout and IdleTimeout > 0"))
	}
	if c.HTTP.MaxHeaderBytes <= 0 {
		errs = append(errs, errors.New("HTTP.MaxHeaderBytes must be positive"))
	}
	if c.MaxConns <= 0 {
		errs = append(errs, errors.New("MaxConns must be positive"))
	}
	if c.Limits.BodyBytes <= 0 || c.Limits.BatchBodyBytes < c.Limits.BodyBytes {
		errs = append(errs, errors.New("Limits: need 0 < BodyBytes <= BatchBodyBytes"))
	}
	if c.Ready.Interval <= 0 || c.Ready.MaxAge < c.Ready.Interval {
		errs = append(errs, errors.New("Ready: need 0 < Interval <= MaxAge"))
	}
	if err := c.Auth.Validate(c.Mode); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.validateRateLimit()...)
	errs = append(errs, c.CORS.validate()...)
	return errors.Join(errs...)
}

func (c Config) validateRateLimit() []error {
	var errs []error
	r := c.RateLimit
	// A batch takes all its tokens at once, so a bucket smaller than a full batch would refuse it forever.
	if r.PatientBurst < c.Limits.BatchItems || r.ClientBurst < c.Limits.BatchItems {
		errs = append(errs, fmt.Errorf("RateLimit: PatientBurst (%d) and ClientBurst (%d) must be at least Limits.BatchItems (%d)",
			r.PatientBurst, r.ClientBurst, c.Limits.BatchItems))
	}
	if r.PatientRate <= 0 || r.ClientRate <= 0 {
		errs = append(errs, errors.New("RateLimit: PatientRate and ClientRate must be positive"))
	}
	if r.ForwardedForHops < 0 {
		errs = append(errs, errors.New("RateLimit.ForwardedForHops must not be negative"))
	}
	if r.KeyPrefix == "" || r.MaxKeys <= 0 {
		errs = append(errs, errors.New("RateLimit: KeyPrefix must be set and MaxKeys positive"))
	}
	if r.RedisTimeout <= 0 {
		errs = append(errs, errors.New("RateLimit.RedisTimeout must be positive"))
	}
	return errs
}

func (c CORSConf) validate() []error {
	var errs []error
	for i, o := range c.AllowOrigins {
		if !isOrigin(o) {
			errs = append(errs, fmt.Errorf("CORS.AllowOrigins[%d] (%q) is not an origin: want scheme://host[:port], lowercase, no path, not *", i, o))
		}
	}
	if len(c.AllowOrigins) > 0 && c.MaxAge < time.Second {
		errs = append(errs, errors.New("CORS.MaxAge must be at least 1s"))
	}
	return errs
}

// isOrigin reports whether o is an origin as browsers send it in the Origin header: a lowercase http or
// https scheme and host, an optional port, nothing else.
func isOrigin(o string) bool {
	u, err := url.Parse(o)
	if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return false
	}
	return u.Scheme+"://"+u.Host == o && strings.ToLower(o) == o && u.User == nil
}

// ServerConf is the RestConf to build the server with. It turns off five go-zero middlewares whatever the
// file says, because each would break a promise of this API:
//   - Log: on any 5xx it dumps the request with the first 1 KiB of its body, i.e. patient answers, into the
//     error log (rest/handler/loghandler.go). internal/middleware.AccessLog replaces it.
//   - MaxBytes: it answers a bare 413 with no JSON, and only when Content-Length is set; the handlers enforce
//     per-route limits with http.MaxBytesReader, chunked bodies included.
//   - Breaker: after a run of Kafka 503s it answers bare 503s without Retry-After for a while, even once Kafka
//     is back; the produce timeout and /readyz already cover a Kafka outage.
//   - MaxConns: it counts requests inside handlers, not connections (a client stuck sending headers is not
//     counted), and beyond the limit answers a bare 503, which here must mean Kafka. handler.ServerLimits
//     caps open connections at MaxConns instead.
//   - Gunzip: a body that is not gzip gets a bare 400 with no error code; the handlers decode gzip themselves
//     (handler/body.go), with the size limit on the decoded body.
//
// And go-zero's Prometheus middleware: it counts every route in the global registry under its own names
// (http_server_requests_*), which nothing serves; internal/metrics counts the same requests once, on /metrics.
//
// StatLog sets go-zero's Log.Stat (logx turns its stat lines off when false) and its Metrics middleware, whose
// only use with the breaker and the shedder off is the minutely qps line.
func (c Config) ServerConf() rest.RestConf {
	rc := c.RestConf
	rc.Middlewares.Log = false
	rc.Middlewares.MaxBytes = false
	rc.Middlewares.Breaker = false
	rc.Middlewares.Gunzip = false
	rc.Middlewares.MaxConns = false
	rc.Middlewares.Prometheus = false
	rc.Middlewares.Metrics = c.StatLog
	rc.Log.Stat = c.StatLog
	// Tracing is off unless Telemetry.Endpoint names an exporter's collector; go-zero would otherwise record
	// every span and export none.
	rc.Telemetry.Disabled = rc.Telemetry.Disabled || rc.Telemetry.Endpoint == ""
	return rc
}

// Report returns the clock checks for report.Submission.Validate.
func (l LimitsConf) Report() report.Limits {
	return report.Limits{MaxAge: l.MaxAge, MaxSkew: l.MaxSkew}
}
