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

// stock-api is not a module of its own: Build and ConfigPath find it inside e2e, and it builds on e2e's
// go.mod alone.
func TestBuildFindsAServiceInsideAModule(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary; skipped with -short")
	}
	root, err := stack.Root(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, stack.ConfigPath("stock-api"))); err != nil {
		t.Errorf("stock-api's config: %v", err)
	}
	if got := stack.ConfigPath("epro-api"); got != "epro-api/etc/epro-api.yaml" {
		t.Errorf("ConfigPath(epro-api) = %q", got)
	}
	out := t.TempDir()
	if err := stack.Build(context.Background(), root, out, "stock-api"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(out, "stock-api")); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("no executable stock-api in %s: %v", out, err)
	}
}
