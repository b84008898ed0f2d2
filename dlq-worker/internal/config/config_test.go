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
	var c config.Config
	if err := conf.Load(filepath.Join("..", "..", "etc", "dlq-worker.yaml"), &c, conf.UseEnv()); err != nil {
		t.Fatal(err)
	}
	if c.Port != 8890 || c.DeadLetters.Topic != "epro.reports.v1.dlq" || c.DeadLetters.Group != "dlq-worker" ||
		c.DeadLetters.StartOffset != "first" || c.DeadLetters.Commit != "after-insert" {
		t.Errorf("config = %+v", c)
	}
	if got := c.ProducerConf().Brokers; len(got) != 2 || got[1] != "k2:9092" {
		t.Errorf("producer brokers = %v", got)
	}
	if len(c.Replay.AllowedTopics) != 1 || c.Replay.AllowedTopics[0] != "epro.reports.v1" {
		t.Errorf("allowed topics = %v", c.Replay.AllowedTopics)
	}
	if c.ServerConf().Middlewares.Log {
		t.Error("go-zero's log middleware (which logs bodies) is on")
	}
}

// Every default is in a tag: a config naming only addresses and the key gets them all.
func TestDefaults(t *testing.T) {
	var c config.Config
	yaml := "Name: d\nPort: 1\nTimeout: 10000\nDeadLetters:\n  Brokers: [k:9092]\nMySQL:\n  DSN: x\nAuth:\n  Secret: " + strings.Repeat("k", 32) + "\n"
	if err := conf.LoadFromYamlBytes([]byte(yaml), &c); err != nil {
		t.Fatal(err)
	}
	d := c.DeadLetters
	if d.Topic != "epro.reports.v1.dlq" || d.Group != "dlq-worker" || d.StartOffset != "first" || d.Commit != "after-insert" ||
		d.MaxWait != 500*time.Millisecond || d.InsertTimeout != 5*time.Second {
		t.Errorf("consumer defaults = %+v", d)
	}
	b := c.Replay.Bulk
	if b.RatePerSecond != 10 || b.MaxItems != 10000 || b.PauseAfterFailures != 3 || b.PauseAfterRedeadLettered != 3 || b.CheckInterval != time.Second {
		t.Errorf("bulk defaults = %+v", b)
	}
	if len(c.Replay.AllowedTopics) != 1 || c.Replay.AllowedTopics[0] != "epro.reports.v1" || c.Replay.Timeout != 5*time.Second {
		t.Errorf("replay defaults = %+v", c.Replay)
	}
	if c.MySQL.QueryTimeout != 3*time.Second || !c.MySQL.Migrate || c.Auth.MaxTTL != 720*time.Hour || c.List.MaxLimit != 200 {
		t.Errorf("defaults = %+v %+v %+v", c.MySQL, c.Auth, c.List)
	}
	if got := c.ProducerConf().Brokers; len(got) != 1 || got[0] != "k:9092" {
		t.Errorf("producer brokers default = %v", got)
	}
}

func TestValidate(t *testing.T) {
	base := "Name: d\nPort: 1\nTimeout: 10000\nDeadLetters:\n  Brokers: [k:9092]\nMySQL:\n  DSN: x\n"
	for name, yaml := range map[string]string{
		"short key":          base + "Auth:\n  Secret: short\n",
		"empty brokers":      strings.Replace(base, "[k:9092]", "[]", 1) + "Auth:\n  Secret: " + strings.Repeat("k", 32) + "\n",
		"timeouts":           strings.Replace(base, "Timeout: 10000", "Timeout: 3000", 1) + "Auth:\n  Secret: " + strings.Repeat("k", 32) + "\n",
		"bad start offset":   strings.Replace(base, "[k:9092]", "[k:9092]\n  StartOffset: middle", 1) + "Auth:\n  Secret: " + strings.Repeat("k", 32) + "\n",
		"rate above maximum": base + "Auth:\n  Secret: " + strings.Repeat("k", 32) + "\nReplay:\n  Bulk:\n    RatePerSecond: 500\n",
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
