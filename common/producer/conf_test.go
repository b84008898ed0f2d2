package producer_test

import (
	"strings"
	"testing"
	"time"

	"github.com/epro-intake/common/producer"
)

func TestConfValidate(t *testing.T) {
	valid := producer.Conf{Brokers: []string{"k1:9092,k2:9092"}, BatchTimeout: time.Millisecond, BatchSize: 100,
		WriteTimeout: 2 * time.Second, MaxAttempts: 5}
	if err := valid.Validate(); err != nil {
		t.Fatalf("valid conf refused: %v", err)
	}
	for _, tc := range []struct {
		want   string
		change func(*producer.Conf)
	}{
		{"Brokers", func(c *producer.Conf) { c.Brokers = []string{" , "} }},
		{"BatchTimeout", func(c *producer.Conf) { c.BatchTimeout = 0 }},
		{"BatchSize", func(c *producer.Conf) { c.BatchSize = 0 }},
		{"WriteTimeout", func(c *producer.Conf) { c.WriteTimeout = -time.Second }},
		{"MaxAttempts", func(c *producer.Conf) { c.MaxAttempts = 0 }},
	} {
		c := valid
		tc.change(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want an error naming it", tc.want, err)
		}
	}
}
