// Package workspace finds this checkout and builds its service binaries, for the tools and tests that run
// the services as processes.
package workspace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Root returns the directory of the go.work that ties the modules together. `go env GOWORK` finds it the way
// the go command itself does (including a GOWORK override); walking up from the working directory covers
// GOWORK=off.
func Root(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOWORK").Output()
	if err == nil {
		if p := strings.TrimSpace(string(out)); p != "" && p != "off" {
			return filepath.Dir(p), nil
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find repository root: no go.work above the working directory; run from inside the checkout")
		}
		dir = parent
	}
}

// Build builds each module's main package (root/<module>) into outDir/<module>. Each module is built on its
// own go.mod (GOWORK=off), as its Docker image is, so the binaries are what a release would ship.
func Build(ctx context.Context, root, outDir string, modules ...string) error {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	for _, m := range modules {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(outDir, m), ".")
		cmd.Dir = filepath.Join(root, m)
		cmd.Env = append(os.Environ(), "GOWORK=off")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build %s: %w\n%s", m, err, strings.TrimSpace(out.String()))
		}
	}
	return nil
}
