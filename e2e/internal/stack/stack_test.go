package stack_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/e2e/internal/stack"
)

func TestRenderConfigKeepsEnvReferencesAndSetsPaths(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "in.yaml")
	cfg := "Name: svc\nKafka:\n  Brokers: [${EPRO_KAFKA_BROKERS}]\n  Topic: prod\nDSN: ${EPRO_MYSQL_DSN}\n"
	if err := os.WriteFile(src, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "out.yaml")
	err := stack.RenderConfig(src, dst, map[string]any{
		"Kafka.Topic": "test-topic", "Retry.MaxAttempts": 2, "Allowed": []any{"a", "b"},
	})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := os.ReadFile(dst)
	for _, want := range []string{"${EPRO_KAFKA_BROKERS}", "DSN: ${EPRO_MYSQL_DSN}", "Topic: test-topic", "MaxAttempts: 2", "- a"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("rendered config lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "prod") {
		t.Errorf("the topic was not replaced:\n%s", out)
	}
	if v, err := stack.ConfigValue(dst, "Retry.MaxAttempts"); err != nil || v != "2" {
		t.Errorf("ConfigValue = %q, %v", v, err)
	}
	if _, err := stack.ConfigValue(dst, "Retry.Missing"); err == nil {
		t.Error("ConfigValue found a path that is not there")
	}
}

// The stop policy: SIGTERM first, SIGKILL after the limit; a process that ignores SIGTERM is killed and
// named, and one that exits on its own is reported as died.
func TestGroupStopPolicy(t *testing.T) {
	dir := t.TempDir()
	var g stack.Group
	stubborn, err := g.Start(stack.Spec{Name: "stubborn", Bin: "/bin/sh", Args: []string{"-c", `trap "" TERM; echo up; sleep 30`},
		Log: filepath.Join(dir, "stubborn.log")})
	if err != nil {
		t.Fatal(err)
	}
	polite, err := g.Start(stack.Spec{Name: "polite", Bin: "/bin/sh", Args: []string{"-c", "exec sleep 30"},
		Log: filepath.Join(dir, "polite.log")})
	if err != nil {
		t.Fatal(err)
	}
	// Let the shell install its trap before it is signalled.
	if err := stack.Eventually(context.Background(), 5*time.Second, "stubborn up", nil, func() (bool, string) {
		return stubborn.Tail(1) == "up", stubborn.Tail(1)
	}); err != nil {
		t.Fatal(err)
	}
	err = g.Stop(500 * time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "stubborn had to be killed") || strings.Contains(err.Error(), "polite") {
		t.Errorf("Stop = %v; want only stubborn named as killed", err)
	}
	if !stubborn.Exited() || !polite.Exited() {
		t.Fatal("Stop returned with a process still running")
	}
	if err := g.Died(); err != nil {
		t.Errorf("processes asked to stop count as died: %v", err)
	}

	var g2 stack.Group
	if _, err := g2.Start(stack.Spec{Name: "quitter", Bin: "/bin/sh", Args: []string{"-c", "exit 3"}, Log: filepath.Join(dir, "q.log")}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g2.Dead():
	case <-time.After(5 * time.Second):
		t.Fatal("an exit on its own was not noticed")
	}
	if err := g2.Died(); err == nil || !strings.Contains(err.Error(), "quitter died") {
		t.Errorf("Died = %v", err)
	}
	err = g2.Wait(context.Background(), time.Minute, "something", func() (bool, string) { return false, "never" })
	if err == nil || !strings.Contains(err.Error(), "quitter") {
		t.Errorf("Wait did not give up on a dead process: %v", err)
	}
}

func TestEmbeddedKafkaOfSeveralBrokers(t *testing.T) {
	inf, err := stack.Embedded(stack.EmbeddedOptions{Brokers: 3, Database: "epro"})
	if err != nil {
		t.Fatal(err)
	}
	defer inf.Stop()
	if len(inf.Brokers) != 3 {
		t.Fatalf("brokers = %v, want 3", inf.Brokers)
	}
	client := &kafka.Client{Addr: kafka.TCP(inf.Brokers[0]), Timeout: 10 * time.Second}
	md, err := client.Metadata(context.Background(), &kafka.MetadataRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(md.Brokers) != 3 {
		t.Errorf("the cluster reports %d brokers, want 3", len(md.Brokers))
	}
	if !strings.Contains(strings.Join(inf.Env(), " "), "EPRO_KAFKA_BROKERS="+strings.Join(inf.Brokers, ",")) {
		t.Errorf("Env does not name every broker: %v", inf.Env())
	}
}

func TestFormatUUIDIsVersion4(t *testing.T) {
	u := stack.FormatUUID([16]byte{0: 0xff, 6: 0xff, 8: 0xff, 15: 0x01})
	if u != "ff000000-0000-4f00-bf00-000000000001" {
		t.Errorf("FormatUUID = %s", u)
	}
	if a, b := stack.NewUUID(), stack.NewUUID(); a == b || len(a) != 36 {
		t.Errorf("NewUUID gave %s and %s", a, b)
	}
}

func TestExpandConfigLikeGoZero(t *testing.T) {
	cfg := "# ${IN_COMMENT}\nPort: ${EPRO_API_PORT}\nBrokers: [${EPRO_KAFKA_BROKERS}]\nPassword: ${NOBODY_SETS}\n"
	lookup := func(name string) (string, bool) {
		v, ok := map[string]string{"EPRO_API_PORT": "8888", "EPRO_KAFKA_BROKERS": "a:1,b:2"}[name]
		return v, ok
	}
	expanded, unset := stack.ExpandConfig([]byte(cfg), lookup)
	if !strings.Contains(string(expanded), "Port: 8888\nBrokers: [a:1,b:2]\nPassword: \n") {
		t.Errorf("expanded:\n%s", expanded)
	}
	if len(unset) != 1 || unset[0] != "NOBODY_SETS" {
		t.Errorf("unset = %v, want [NOBODY_SETS]", unset)
	}
}
