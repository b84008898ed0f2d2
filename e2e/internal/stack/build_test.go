package stack_test

import (
	"context"
	"os"
	"path/filepath"
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
