// Package svc builds epro-mq's dependencies once.
package svc

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/epro-intake/common/mysqldb"
	"github.com/epro-intake/common/producer"
	"github.com/epro-intake/common/reportdb"
	"github.com/epro-intake/epro-mq/internal/config"
	"github.com/epro-intake/epro-mq/internal/consumer"
	"github.com/epro-intake/epro-mq/internal/health"
	"github.com/epro-intake/epro-mq/internal/ingest"
	"github.com/epro-intake/epro-mq/internal/metrics"
	"github.com/epro-intake/epro-mq/internal/store"
)

// ServiceContext holds epro-mq's clients and its consumer.
type ServiceContext struct {
	Config   config.Config
	DB       *sql.DB
	Redis    *redis.Client // nil when no Redis is configured
	DLQ      *producer.Producer
	Ingester *ingest.Ingester
	Consumer *consumer.ReportConsumer
	Metrics  *metrics.Metrics
	// Health serves /healthz, /readyz and /metrics; main binds it with Listen before starting it.
	Health *health.Server
}

// NewServiceContext connects to MySQL (applying migrations when configured) and builds the consumer.
func NewServiceContext(ctx context.Context, c config.Config) (*ServiceContext, error) {
	db, err := mysqldb.Open(c.MySQL.DSN, mysqldb.Pool{
		MaxOpenConns: c.MySQL.MaxOpenConns, MaxIdleConns: c.MySQL.MaxOpenConns, ConnMaxLifetime: 30 * time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("open mysql: %w", err)
	}
	if c.MySQL.Migrate {
		if err := waitAndMigrate(ctx, db); err != nil {
			_ = db.Close()
			return nil, err
		}
	}
	var rdb *redis.Client
	if c.Redis.Addr != "" {
		rdb = redis.NewClient(&redis.Options{
			Addr: c.Redis.Addr, Password: c.Redis.Password, PoolSize: c.Redis.PoolSize,
			DialTimeout: c.Redis.Timeout, ReadTimeout: c.Redis.Timeout, WriteTimeout: c.Redis.Timeout,
			// A cache miss costs one MySQL dedupe; a retry storm against a sick Redis costs more.
			MaxRetries: 0,
		})
	}
	dlq, err := producer.New(c.DeadLetter.Producer)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	in, err := ingest.New(ingest.Conf{
		Group:               c.Reports.Group,
		DLQTopic:            c.DeadLetter.Topic,
		MaxAttempts:         c.Retry.MaxAttempts,
		InitialBackoff:      c.Retry.InitialBackoff,
		MaxBackoff:          c.Retry.MaxBackoff,
		TransientMaxBackoff: c.Retry.TransientMaxBackoff,
		RedisTimeout:        c.Redis.Timeout,
		Brokers:             producer.SplitBrokers(c.Reports.Brokers),
		Questionnaires:      c.Questionnaires,
	}, store.NewReports(db), dlq, redisOrNil(rdb))
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	cons, err := consumer.New(c.Reports, c.Pipeline, in)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("consumer config: %w", err)
	}
	m := metrics.New(in, cons, c.Health.LagTimeout)
	in.Observe(m)
	cons.Observe(m)
	return &ServiceContext{Config: c, DB: db, Redis: rdb, DLQ: dlq, Ingester: in, Consumer: cons, Metrics: m,
		Health: health.New(c.Health, cons, db, m.Handler())}, nil
}

func redisOrNil(rdb *redis.Client) redis.UniversalClient {
	if rdb == nil {
		return nil
	}
	return rdb
}

// waitAndMigrate applies migrations, waiting up to a minute for MySQL to come up, as it may start later than
// epro-mq under compose.
func waitAndMigrate(ctx context.Context, db *sql.DB) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := mysqldb.Wait(ctx, db); err != nil {
		return err
	}
	return reportdb.Migrate(ctx, db)
}

// Close releases the clients.
func (s *ServiceContext) Close() {
	_ = s.DLQ.Close()
	if s.Redis != nil {
		_ = s.Redis.Close()
	}
	_ = s.DB.Close()
}
