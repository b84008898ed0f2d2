package producer_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/epro-intake/common/embedded"
	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/common/producer"
)

// Ping follows the broker: it fails once the broker is gone, although kafka-go's transport still holds the
// topic's metadata from before, and passes again once the broker is back.
func TestPingFollowsTheBroker(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	start := func() func() {
		t.Helper()
		_, stop, err := embedded.StartKafka(context.Background(), addr)
		if err != nil {
			t.Fatalf("start kafka on %s: %v", addr, err)
		}
		infratest.CreateTopic(t, []string{addr}, "ping", 3)
		return stop
	}
	stop := start()
	t.Cleanup(func() { stop() })

	c, err := producer.DefaultConf([]string{addr})
	if err != nil {
		t.Fatal(err)
	}
	p, err := producer.New(c)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ping := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return p.Ping(ctx, "ping")
	}
	waitPing(t, "a ping with the broker up", func() bool { return ping() == nil })
	if err := p.Ping(context.Background(), "no-such-topic"); err == nil {
		t.Error("ping of a topic that does not exist passed")
	}

	stop()
	waitPing(t, "a failed ping after the broker stopped", func() bool { return ping() != nil })
	for range 3 { // and it stays failed: no cached answer passes
		if err := ping(); err == nil {
			t.Fatal("a ping passed with the broker stopped")
		}
	}

	stop = start()
	waitPing(t, "a ping after the broker came back", func() bool { return ping() == nil })
}

func waitPing(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
