package config_test

import (
	"testing"
	"time"

	"github.com/zeromicro/go-zero/core/conf"

	"github.com/epro-intake/epro-mq/internal/config"
)

// The shipped file must load, and must state the settings whose kq defaults would lose reports.
func TestShippedConfigStatesTheDeliveryContract(t *testing.T) {
	t.Setenv("EPRO_KAFKA_BROKERS", "k1:9092,k2:9092")
	t.Setenv("EPRO_MYSQL_DSN", "u:p@tcp(db:3306)/epro?parseTime=true&loc=UTC")
	t.Setenv("EPRO_REDIS_ADDR", "redis:6379")
	var c config.Config
	if err := conf.Load("../../etc/epro-mq.yaml", &c, conf.UseEnv()); err != nil {
		t.Fatal(err)
	}
	if c.Reports.Offset != "first" {
		t.Errorf("Offset = %q; a new group must start at the earliest record", c.Reports.Offset)
	}
	if c.Reports.ForceCommit {
		t.Error("ForceCommit is true: failed reports would be committed")
	}
	if c.Reports.Topic != "epro.reports.v1" || c.DeadLetter.Topic != "epro.reports.v1.dlq" || c.Reports.Group != "epro-mq" {
		t.Errorf("topics/group = %s %s %s", c.Reports.Topic, c.DeadLetter.Topic, c.Reports.Group)
	}
	if c.MySQL.DSN == "" || c.Redis.Addr != "redis:6379" || len(c.Reports.Brokers) != 1 {
		t.Errorf("environment not applied: %+v %+v %v", c.MySQL, c.Redis, c.Reports.Brokers)
	}
	if c.Shutdown.WaitTime <= c.Pipeline.DrainTimeout {
		t.Errorf("go-zero force-quits after %s, before the %s drain can finish", c.Shutdown.WaitTime, c.Pipeline.DrainTimeout)
	}
	if c.Pipeline.RebalanceTimeout <= c.Pipeline.DrainTimeout {
		t.Errorf("rebalance timeout %s must exceed the drain %s", c.Pipeline.RebalanceTimeout, c.Pipeline.DrainTimeout)
	}
	if c.Pipeline.BatchWait <= 0 || c.Pipeline.BatchWait > 50*time.Millisecond || c.DeadLetter.Producer.BatchTimeout > 10*time.Millisecond {
		t.Errorf("batch waits %s / %s are latency floors and must stay small", c.Pipeline.BatchWait, c.DeadLetter.Producer.BatchTimeout)
	}
}
