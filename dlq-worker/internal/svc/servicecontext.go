// Package svc builds dlq-worker's dependencies once: MySQL, the replay producer, the consumer, the
// resolver (replays and discards), the reconciliation runner, metrics and the auth middlewares.
package svc

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/zeromicro/go-zero/rest"

	"github.com/epro-intake/common/mysqldb"
	"github.com/epro-intake/common/producer"
	"github.com/epro-intake/dlq-worker/internal/auth"
	"github.com/epro-intake/dlq-worker/internal/config"
	"github.com/epro-intake/dlq-worker/internal/consumer"
	"github.com/epro-intake/dlq-worker/internal/metrics"
	"github.com/epro-intake/dlq-worker/internal/middleware"
	"github.com/epro-intake/dlq-worker/internal/reconcile"
	"github.com/epro-intake/dlq-worker/internal/replay"
	"github.com/epro-intake/dlq-worker/internal/store"
)

// ServiceContext is dlq-worker's dependency container.
type ServiceContext struct {
	Config      config.Config
	DB          *sql.DB
	DeadLetters *store.DeadLetters
	Audit       *store.Audit
	Reports     *store.Reports
	Jobs        *store.Jobs
	Producer    *producer.Producer
	Resolver    *replay.Resolver
	Consumer    *consumer.DeadLetterConsumer
	// Reconciliations runs the API's reconciliations of the report topic, one at a time.
	Reconciliations *reconcile.Runs
	Metrics         *metrics.Metrics
	// Tokens checks the ops API's bearer tokens; in oidc mode it refreshes the issuer's keys until Close.
	Tokens *auth.Verifier

	// Reviewer and Operator are the route middlewares named in dlq.api.
	Reviewer rest.Middleware
	Operator rest.Middleware
}

// NewServiceContext connects to MySQL, applies migrations when configured and builds the consumer and the
// resolver (neither started; the resolver's Start resumes bulk jobs no live replica holds).
func NewServiceContext(ctx context.Context, c config.Config) (*ServiceContext, error) {
	db, err := OpenMySQL(c.MySQL)
	if err != nil {
		return nil, err
	}
	if c.MySQL.Migrate {
		if err := waitAndMigrate(ctx, db); err != nil {
			_ = db.Close()
			return nil, err
		}
	}
	s := &ServiceContext{
		Config:      c,
		DB:          db,
		DeadLetters: store.NewDeadLetters(db),
		Audit:       store.NewAudit(db),
		Reports:     store.NewReports(db),
		Jobs:        store.NewJobs(db),
	}
	if s.Producer, err = producer.New(c.Replay.Producer); err != nil {
		_ = db.Close()
		return nil, err
	}
	s.Metrics = metrics.New(s.DeadLetters, c.MySQL.QueryTimeout)
	if s.Consumer, err = consumer.New(c.DeadLetters, s.DeadLetters, s.Metrics); err != nil {
		_ = s.Close()
		return nil, err
	}
	b := c.Replay.Bulk
	topic, err := replay.NewKafkaTopic(producer.SplitBrokers(c.Replay.Producer.Brokers))
	if err != nil {
		_ = s.Close()
		return nil, err
	}
	s.Resolver, err = replay.New(replay.Conf{
		AllowedTopics: c.Replay.AllowedTopics,
		Timeout:       c.Replay.Timeout,
		Bulk: replay.BulkConf{
			RatePerSecond: b.RatePerSecond, MaxRatePerSecond: b.MaxRatePerSecond, MaxItems: b.MaxItems,
			PauseAfterFailures: b.PauseAfterFailures, PauseAfterRedeadLettered: b.PauseAfterRedeadLettered,
			CheckInterval: b.CheckInterval, LeaseTTL: b.LeaseTTL, PollInterval: b.PollInterval,
			MaxConcurrentJobs: b.MaxConcurrentJobs,
		},
	}, s.DeadLetters, s.Reports, s.Audit, s.Jobs, s.Producer, topic)
	if err != nil {
		_ = s.Close()
		return nil, err
	}
	rc := c.Reconcile
	engine, err := reconcile.New(reconcile.Conf{Brokers: c.DeadLetters.Brokers, Topic: rc.Topic, Group: rc.Group,
		BatchSize: rc.BatchSize, MaxWait: rc.MaxWait, QueryTimeout: rc.QueryTimeout}, db)
	var redriver *reconcile.Redriver
	if err == nil {
		// Re-drives go through the replay producer (acks=all, murmur2 by key: the original's partition).
		redriver, err = reconcile.NewRedriver(engine, s.Producer, s.Audit, reconcile.RedriveConf{RatePerSecond: rc.RedriveRatePerSecond,
			Timeout: rc.RedriveTimeout})
	}
	if err == nil {
		s.Reconciliations, err = reconcile.NewRuns(engine, s.Audit, redriver, reconcile.RunsConf{Timeout: rc.Timeout, MaxExceptions: rc.MaxExceptions, MaxRedrive: rc.MaxRedrive})
	}
	if err != nil {
		_ = s.Close()
		return nil, err
	}
	if s.Tokens, err = auth.NewVerifier(c.Auth, nil); err != nil {
		_ = s.Close()
		return nil, err
	}
	a := middleware.Auth{Tokens: s.Tokens}
	s.Reviewer = a.Require(auth.RoleReviewer)
	s.Operator = a.Require(auth.RoleOperator)
	return s, nil
}

// OpenMySQL opens (without connecting) the archive database.
func OpenMySQL(c config.MySQLConf) (*sql.DB, error) {
	return mysqldb.Open(c.DSN, mysqldb.Pool{
		MaxOpenConns: c.MaxOpenConns, MaxIdleConns: c.MaxOpenConns, ConnMaxLifetime: 30 * time.Minute,
	})
}

// waitAndMigrate applies migrations, waiting up to a minute for MySQL, which may start after dlq-worker under
// compose.
func waitAndMigrate(ctx context.Context, db *sql.DB) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := mysqldb.Wait(ctx, db); err != nil {
		return err
	}
	return store.Migrate(ctx, db)
}

// Close releases the clients. Stop the consumer and the resolver first.
func (s *ServiceContext) Close() error {
	if s.Tokens != nil {
		s.Tokens.Close()
	}
	return errors.Join(s.Producer.Close(), s.DB.Close())
}
