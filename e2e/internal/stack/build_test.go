package stack_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/epro-intake/e2e/internal/stack"
)

func TestRootFindsTheWorkspaceFromAnyModule(t *testing.T) {
	root, err := stack.Root(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"go.work", "epro-api/go.mod", "epro-mq/go.mod", "dlq-worker/go.mod"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("root %s has no %s", root, f)
		}
	}
	t.Setenv("GOWORK", "off")
	again, err := stack.Root(context.Background())
	if err != nil || again != root {
		t.Fatalf("with GOWORK=off: %q, %v; want %q", again, err, root)
	}
}

func TestBuildReportsTheCompilerOutput(t *testing.T) {
	root := t.TempDir()
	mod := filepath.Join(root, "broken")
	if err := os.MkdirAll(mod, 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(mod, "go.mod"), []byte("module broken\n\ngo 1.26.0\n"), 0o644)
	_ = os.WriteFile(filepath.Join(mod, "main.go"), []byte("package main\n\nfunc main() { undefinedCall() }\n"), 0o644)
	err := stack.Build(context.Background(), root, t.TempDir(), "broken")
	if err == nil {
		t.Fatal("a module that does not compile built")
	}
	if want := "undefined: undefinedCall"; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not carry the compiler's %q", err, want)
	}
}
