package producer_test

import (
	"strings"
	"testing"
	"time"

	"github.com/epro-intake/common/producer"
)

func TestConfValidate(t *testing.T) {
	valid := producer.Conf{Brokers: []string{"k1:9092,k2:9092"}, BatchTimeout: time.Millisecond, WriteTimeout: 2 * time.Second, MaxAttempts: 5}
	if err := valid.Validate(); err != nil {
		t.Fatalf("valid conf refused: %v", err)
	}
	for _, tc := range []struct {
		want   string
		change func(*producer.Conf)
	}{
		{"Brokers", func(c *producer.Conf) { c.Brokers = []string{" , "} }},
		{"BatchTimeout", func(c *producer.Conf) { c.BatchTimeout = 0 }},
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

func TestNewRefusesZeroSettingsAndDefaultConfIsValid(t *testing.T) {
	if _, err := producer.New(producer.Conf{Brokers: []string{"k1:9092"}}); err == nil ||
		!strings.Contains(err.Error(), "BatchTimeout") || !strings.Contains(err.Error(), "WriteTimeout") || !strings.Contains(err.Error(), "MaxAttempts") {
		t.Fatalf("New with zero settings: %v; want the zero settings refused by name", err)
	}
	c, err := producer.DefaultConf([]string{"k1:9092"})
	if err != nil {
		t.Fatal(err)
	}
	// The tag defaults, read back: a change to a tag shows up here.
	if c.BatchTimeout != time.Millisecond || c.WriteTimeout != 2*time.Second || c.MaxAttempts != 5 {
		t.Errorf("DefaultConf = %+v; want the tag defaults 1ms, 2s, 5", c)
	}
	p, err := producer.New(c)
	if err != nil {
		t.Fatalf("New(DefaultConf): %v", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("Close of an unused producer: %v", err)
	}
}
