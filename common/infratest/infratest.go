// Package infratest gives tests across the repository their infrastructure:
// Kafka brokers, a Redis address and a fresh MySQL database.
//
// Each helper uses the real service named by an environment variable when it
// is set, and otherwise an embedded stand-in started once per test process:
//
//	EPRO_TEST_KAFKA_BROKERS  comma-separated bootstrap brokers (real Kafka)
//	EPRO_TEST_REDIS_ADDR     host:port of a real Redis
//	EPRO_TEST_MYSQL_DSN      server-level go-sql-driver DSN, e.g. epro:epro@tcp(127.0.0.1:3306)/
//	EPRO_TEST_REQUIRE_REAL=1 forbid the embedded fallbacks (CI sets this)
//
// `eval "$(deploy/scripts/services.sh env)"` sets the first three for the
// services that deploy/scripts/services.sh up starts.
//
// A configured service that cannot be reached fails the test; it is never
// skipped, so a broken environment cannot pass as green.
//
// Because `go test ./...` runs packages as parallel processes against the same
// servers, tests isolate themselves by name: UniqueName for topics, consumer
// groups and keys, and MySQL gives each test its own database.
//
// Differences of the embedded stand-ins that tests must not rely on:
//
//   - Kafka (kfake): in memory, one broker, no auto topic creation (same as the
//     real setup). Consumer groups work with kafka-go's Reader and
//     ConsumerGroup. Rebalances are quicker than on a real broker.
//   - Redis (miniredis): in memory; TTLs advance in real time.
//   - MySQL (go-mysql-server, in-memory): speaks the MySQL protocol and reports
//     a duplicate key as error 1062 like MySQL (but with SQLState HY000). It
//     has no row locking, so no deadlocks (1213) or lock waits ever occur, and
//     timings and concurrency behaviour mean nothing there. See mysql.go for
//     the full list.
package infratest

import (
	"os"
	"strings"
	"testing"
)

// Environment variables read by this package.
const (
	EnvKafkaBrokers = "EPRO_TEST_KAFKA_BROKERS"
	EnvRedisAddr    = "EPRO_TEST_REDIS_ADDR"
	EnvMySQLDSN     = "EPRO_TEST_MYSQL_DSN"
	EnvRequireReal  = "EPRO_TEST_REQUIRE_REAL"
)

// Kinds accepted by IsReal.
const (
	KindKafka = "kafka"
	KindRedis = "redis"
	KindMySQL = "mysql"
)

// RequireReal reports whether EPRO_TEST_REQUIRE_REAL=1. In that mode Kafka,
// Redis and MySQL fail the test when their environment variable is missing
// instead of starting an embedded stand-in, so CI cannot silently test
// against the embedded ones.
func RequireReal() bool {
	return os.Getenv(EnvRequireReal) == "1"
}

// IsReal reports whether the given kind ("kafka", "redis" or "mysql") is
// configured to use a real service. Tests that measure timings or rely on
// behaviour only a real server has (InnoDB deadlocks, broker restarts) can
// use it to skip themselves on the embedded stand-ins.
func IsReal(kind string) bool {
	switch strings.ToLower(kind) {
	case KindKafka:
		return os.Getenv(EnvKafkaBrokers) != ""
	case KindRedis:
		return os.Getenv(EnvRedisAddr) != ""
	case KindMySQL:
		return os.Getenv(EnvMySQLDSN) != ""
	default:
		return false
	}
}

// envOrEmbedded returns the environment value for kind, failing the test when
// it is missing in require-real mode. An empty result means "use embedded".
func envOrEmbedded(t testing.TB, env, kind string) string {
	t.Helper()
	v := strings.TrimSpace(os.Getenv(env))
	if v == "" && RequireReal() {
		t.Fatalf("infratest: %s=1 but %s is not set: a real %s is required "+
			"(run deploy/scripts/services.sh up and eval \"$(deploy/scripts/services.sh env)\")",
			EnvRequireReal, env, kind)
	}
	return v
}
