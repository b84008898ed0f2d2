package stack_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/epro-intake/e2e/internal/stack"
)

// Two epro-mq replicas started from one config each get a port of their own, so parallel tests and
// replicas never share one; the copies keep every ${VAR}. A config that states the port keeps it.
func TestStartGivesEachEproMQAListenerPortOfItsOwn(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	// A stand-in for the binary: it only has to run until stopped.
	if err := os.WriteFile(filepath.Join(bin, "epro-mq"), []byte("#!/bin/sh\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "epro-mq.yaml")
	if err := os.WriteFile(cfg, []byte("Name: epro-mq\nMySQL:\n  DSN: ${EPRO_MYSQL_DSN}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st := &stack.Stack{Root: dir, Bin: bin, Dir: dir}
	t.Cleanup(func() { _ = st.Stop(5 * time.Second) })

	urls := map[string]bool{}
	for _, name := range []string{"epro-mq-1", "epro-mq-2"} {
		p, err := st.Start(name, "epro-mq", cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(p.URL, "http://127.0.0.1:") || urls[p.URL] {
			t.Errorf("%s: URL %q (have %v)", name, p.URL, urls)
		}
		urls[p.URL] = true
		rendered := filepath.Join(dir, name+".listener.yaml")
		port, err := stack.ConfigValue(rendered, "Health.Port")
		if err != nil || p.URL != "http://127.0.0.1:"+port {
			t.Errorf("%s: Health.Port %q, %v; URL %s", name, port, err, p.URL)
		}
		if out, _ := os.ReadFile(rendered); !strings.Contains(string(out), "DSN: ${EPRO_MYSQL_DSN}") {
			t.Errorf("%s: the DSN reference is lost:\n%s", name, out)
		}
	}

	stated := filepath.Join(dir, "stated.yaml")
	if err := os.WriteFile(stated, []byte("Name: epro-mq\nHealth:\n  Host: 127.0.0.1\n  Port: 7001\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := st.Start("epro-mq-3", "epro-mq", stated)
	if err != nil {
		t.Fatal(err)
	}
	if p.URL != "http://127.0.0.1:7001" {
		t.Errorf("a stated port: URL %q", p.URL)
	}
	if _, err := os.Stat(filepath.Join(dir, "epro-mq-3.listener.yaml")); err == nil {
		t.Error("a config that states its port was rendered again")
	}
}
