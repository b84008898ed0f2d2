package stack

import (
	"testing"

	"github.com/epro-intake/common/infratest"
)

// TestInfra is the infrastructure of a test: the servers named by EPRO_TEST_KAFKA_BROKERS,
// EPRO_TEST_MYSQL_DSN and EPRO_TEST_REDIS_ADDR, or embedded stand-ins shared by the whole test binary when
// they are unset. With EPRO_TEST_REQUIRE_REAL=1 a missing server fails the test instead of falling back
// (see common/infratest). The MySQL database is the test's own and is dropped when it ends.
func TestInfra(t testing.TB) *Infra {
	t.Helper()
	return &Infra{
		Brokers:   infratest.Kafka(t),
		DSN:       infratest.MySQL(t),
		RedisAddr: infratest.Redis(t),
	}
}
