package infratest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/epro-intake/common/embedded"
)

var (
	embeddedRedisOnce sync.Once
	embeddedRedisAddr string
	embeddedRedisErr  error
)

// Redis returns the host:port of a Redis server for the test.
//
// With EPRO_TEST_REDIS_ADDR set it returns that address after a PING succeeds
// (otherwise the test fails). Without it, one in-memory miniredis is started
// per test process and shared. The server is shared with other tests and
// packages, so keys must be namespaced (UniqueName) and FLUSHALL is off limits.
func Redis(t testing.TB) string {
	t.Helper()
	if addr := envOrEmbedded(t, EnvRedisAddr, KindRedis); addr != "" {
		if err := pingRedis(addr); err != nil {
			t.Fatalf("infratest: Redis at %s=%s is not usable: %v", EnvRedisAddr, addr, err)
		}
		return addr
	}
	embeddedRedisOnce.Do(func() {
		embeddedRedisAddr, _, embeddedRedisErr = embedded.RunRedis("")
	})
	if embeddedRedisErr != nil {
		t.Fatalf("infratest: starting embedded Redis: %v", embeddedRedisErr)
	}
	return embeddedRedisAddr
}

func pingRedis(addr string) error {
	c := redis.NewClient(&redis.Options{
		Addr:        addr,
		DialTimeout: 3 * time.Second,
		ReadTimeout: 3 * time.Second,
		MaxRetries:  -1,
	})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Ping(ctx).Err()
}
