// Package config is epro-mq's configuration, loaded from etc/epro-mq.yaml with secrets from the environment.
package config

import (
	"time"

	"github.com/zeromicro/go-queue/kq"
	"github.com/zeromicro/go-zero/core/service"

	"github.com/epro-intake/common/producer"
	"github.com/epro-intake/epro-mq/internal/consumer"
)

// Config is epro-mq's configuration.
type Config struct {
	service.ServiceConf
	// Reports is the consumed report topic in kq's terms. epro-mq honours Brokers, Topic, Group, Offset
	// (use "first"), MinBytes, MaxBytes and Processors (the worker count); it refuses ForceCommit: true and
	// ignores Conns and Consumers (one fetch loop per assigned partition).
	Reports kq.KqConf
	// Pipeline shapes the worker pool, batching, commits and draining.
	Pipeline consumer.Conf
	// Retry shapes how failures are retried and when they are dead-lettered.
	Retry RetryConf
	// DeadLetter is where records that cannot be stored go, written with acks=all.
	DeadLetter DeadLetterConf
	MySQL      MySQLConf
	Redis      RedisConf
	// Questionnaires, when set, is the catalogue of "questionnaireId@version" pairs epro-mq stores; other
	// versions fail permanently and are dead-lettered, to be replayed once the catalogue has them.
	Questionnaires []string `json:",optional"`
	// ProgressInterval is how often a line with counters (stored, skipped, dead-lettered, retries, commits)
	// is logged, so an operator sees a backlog drain or a stall.
	ProgressInterval time.Duration `json:",default=30s"`
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
	// DSN in go-sql-driver form; it needs parseTime=true&loc=UTC.
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
