package svc

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"github.com/zeromicro/go-zero/rest"

	"github.com/epro-intake/common/mysqldb"
	"github.com/epro-intake/common/producer"
	"github.com/epro-intake/epro-api/internal/auth"
	"github.com/epro-intake/epro-api/internal/config"
	"github.com/epro-intake/epro-api/internal/metrics"
	"github.com/epro-intake/epro-api/internal/middleware"
	"github.com/epro-intake/epro-api/internal/ratelimit"
	"github.com/epro-intake/epro-api/internal/readiness"
	"github.com/epro-intake/epro-api/internal/redispipe"
)

// Producer is what the API needs from Kafka. *producer.Producer implements it; tests substitute one that
// fails on chosen messages.
type Producer interface {
	Send(ctx context.Context, msgs ...kafka.Message) error
	Ping(ctx context.Context, topic string) error
	Close() error
}

// ServiceContext holds the clients, each built once. None of them connects before first use, so the API
// starts while a dependency is down and /readyz tells when Kafka is there.
type ServiceContext struct {
	Config    config.Config
	Producer  Producer
	DB        *sql.DB
	Redis     *redis.Client
	Readiness *readiness.Checker
	// Tokens checks patients' bearer tokens; in oidc mode it refreshes the issuer's keys until Close.
	Tokens *auth.Verifier
	// Auth is the middleware of the /v1/reports routes (see epro.api).
	Auth rest.Middleware
	// RateLimit is checked before anything is produced; its one Redis call also reads the receipts.
	RateLimit *ratelimit.Limiter
	// RateLimitRedis is RateLimit's client: the same Redis as Redis, with RateLimit.RedisTimeout for every
	// timeout.
	RateLimitRedis *redis.Client
	// StatusWrites sends the status cache's writes after a 202 (logic.markAccepted), queued off the
	// request's path and pipelined across requests.
	StatusWrites *redispipe.Pipe
	// Metrics are served on /metrics.
	Metrics *metrics.Metrics
}

func NewServiceContext(c config.Config) (*ServiceContext, error) {
	db, err := OpenMySQL(c.MySQL)
	if err != nil {
		return nil, err
	}
	tokens, err := auth.NewVerifier(c.Auth, nil)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	p, err := producer.New(c.Kafka)
	if err != nil {
		tokens.Close()
		_ = db.Close()
		return nil, err
	}
	// The limiter's buckets live in the status cache's Redis, whose receipts its script reads; it has a client
	// of its own, with RateLimit.RedisTimeout for every timeout.
	limiterRedis := ratelimit.NewRedis(c.RateLimit, c.Redis)
	limiter, err := ratelimit.New(c.RateLimit, limiterRedis)
	if err != nil {
		tokens.Close()
		_ = db.Close()
		_ = p.Close()
		_ = limiterRedis.Close()
		return nil, err
	}
	rdb := redis.NewClient(&redis.Options{
		Addr:         c.Redis.Addr,
		Password:     c.Redis.Password,
		DB:           c.Redis.DB,
		DialTimeout:  c.Redis.Timeout,
		ReadTimeout:  c.Redis.Timeout,
		WriteTimeout: c.Redis.Timeout,
		PoolSize:     c.Redis.PoolSize,
		// go-redis retries 3 times by default, which would multiply Timeout; the caller's ctx is the budget.
		MaxRetries: 1,
	})
	writes, err := redispipe.New(rdb, statusWritesPerPipeline, statusWritesQueued, c.Redis.Timeout)
	if err != nil {
		tokens.Close()
		_ = db.Close()
		_ = p.Close()
		limiter.Close()
		_ = limiterRedis.Close()
		_ = rdb.Close()
		return nil, err
	}
	m := metrics.New()
	return &ServiceContext{
		Tokens:         tokens,
		Auth:           middleware.NewAuthMiddleware(tokens, m.Rejected).Handle,
		Metrics:        m,
		Config:         c,
		Producer:       p,
		DB:             db,
		Redis:          rdb,
		RateLimitRedis: limiterRedis,
		Readiness:      readiness.New(p, c.Topic, c.Ready.Interval, c.Ready.MaxAge),
		RateLimit:      limiter,
		StatusWrites:   writes,
	}, nil
}

const (
	// statusWritesPerPipeline bounds one pipeline of status writes: 128 requests' receipts and statuses (a
	// batch's are one call).
	statusWritesPerPipeline = 128
	// statusWritesQueued is how many requests' writes may wait while a pipeline is in flight: seconds of
	// intake at the bench's rate. Beyond it a write is not cached, and logged with its request ids (the
	// cache is best effort: a retry is then judged by MySQL or epro-mq).
	statusWritesQueued = 4096
)

// OpenMySQL opens (without connecting) the database holding epro-mq's reports table.
func OpenMySQL(c config.MySQLConf) (*sql.DB, error) {
	return mysqldb.Open(c.DSN, mysqldb.Pool{
		MaxOpenConns: c.MaxOpenConns, MaxIdleConns: c.MaxIdleConns,
		// Below MariaDB's wait_timeout and any proxy idle cut, so a pooled connection is never found dead.
		ConnMaxLifetime: 5 * time.Minute,
		DialTimeout:     c.QueryTimeout,
	})
}

// Close releases every client, after the status writes still queued are sent.
func (s *ServiceContext) Close() error {
	s.Tokens.Close()
	s.RateLimit.Close()
	s.StatusWrites.Close()
	return errors.Join(s.Producer.Close(), s.DB.Close(), s.Redis.Close(), s.RateLimitRedis.Close())
}
