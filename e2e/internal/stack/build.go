// Package stack builds, configures, starts, supervises and stops the suite: epro-api, epro-mq and
// dlq-worker as child processes on Kafka, MySQL and Redis, real or embedded. epro-suite (make run),
// epro-bench (make bench) and the e2e tests all start the suite through it, so there is one build, one kill
// policy and one readiness rule.
//
// What it guarantees: binaries are built the way a release builds them (each module on its own go.mod); a
// service that does not build is an error carrying the compiler's message; every child runs in its own
// process group, is stopped with SIGTERM and killed after a limit, and dies with its parent on Linux.
package stack

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

// Services are the suite's binaries in start order: the consumers before the API, so that the first
// report the API accepts already has a group waiting for it.
var Services = []string{"epro-mq", "dlq-worker", "epro-api"}

// ReadyPaths are the HTTP paths that answer 200 once a service is ready. epro-mq's is on its Health
// listener (Proc.URL under Stack.Start, port 8889 by default): a member of its group with MySQL reachable.
var ReadyPaths = map[string]string{
	"epro-api":   "/readyz",
	"epro-mq":    "/readyz",
	"dlq-worker": "/healthz",
}

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

// serviceDirs are the main packages that are not a module of their own, by binary name. stock-api is the
// stock go-zero + go-queue intake epro-bench measures the suite against; it lives in the e2e module.
var serviceDirs = map[string]string{"stock-api": "e2e/cmd/stock-api"}

// ServiceDir is where service's main package and its etc/ directory are, relative to the repository root:
// the module of that name for the suite's services.
func ServiceDir(service string) string {
	if d, ok := serviceDirs[service]; ok {
		return d
	}
	return service
}

// Build builds each service's main package (root/ServiceDir) into outDir/<service>. Each is built on its
// module's own go.mod (GOWORK=off), as its Docker image is, so the binaries are what a release would ship.
// No -race: the binaries are the system under test, not code under the race detector. A service that does
// not build is an error that carries the compiler's output.
func Build(ctx context.Context, root, outDir string, services ...string) error {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", outDir, err)
	}
	for _, m := range services {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(outDir, m), ".")
		cmd.Dir = filepath.Join(root, ServiceDir(m))
		cmd.Env = append(os.Environ(), "GOWORK=off")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build %s: %w\n%s", m, err, strings.TrimSpace(out.String()))
		}
	}
	return nil
}
