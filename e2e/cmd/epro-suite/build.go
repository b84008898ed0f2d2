package main

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

// service is one binary of the suite, built from <root>/<name> and run with -f <name>/etc/<name>.yaml.
type service struct {
	name   string
	bin    string
	config string // relative to the repository root, which is the children's working directory
	port   int    // from its config; 0 for none
}

// readyPaths are what the suite polls before it calls a service up. epro-mq serves no HTTP; its
// readiness shows in epro-api's status answers.
var readyPaths = map[string]string{
	"epro-api":   "/readyz",
	"dlq-worker": "/healthz",
}

// Start order: consumers before the API (see runSuite).
var serviceNames = []string{"epro-mq", "dlq-worker", "epro-api"}

// optionalServices may be absent or unfinished in a checkout; the suite runs without them.
var optionalServices = map[string]bool{"dlq-worker": true}

// buildServices builds every service into <root>/bin. A required service that does not build is an error;
// an optional one is left out with a warning that carries the compiler's reason.
func buildServices(ctx context.Context, con *console, root string, ports map[string]int) ([]service, error) {
	binDir := filepath.Join(root, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", binDir, err)
	}
	var out []service
	for _, name := range serviceNames {
		s := service{
			name:   name,
			bin:    filepath.Join(binDir, name),
			config: filepath.Join(name, "etc", name+".yaml"),
			port:   ports[name],
		}
		if _, err := os.Stat(filepath.Join(root, s.config)); err != nil {
			if optionalServices[name] {
				con.Printf("skipping %s: %s is missing", name, s.config)
				continue
			}
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		con.Printf("building %s", name)
		reason, err := goBuild(ctx, root, s)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if optionalServices[name] {
				con.Printf("skipping %s: it does not build yet:", name)
				for _, l := range strings.Split(reason, "\n") {
					con.Printf("  %s", l)
				}
				continue
			}
			return nil, fmt.Errorf("build %s: %w\n%s", name, err, reason)
		}
		out = append(out, s)
	}
	return out, nil
}

// goBuild builds s.bin and returns the go command's output as the reason when it fails.
func goBuild(ctx context.Context, root string, s service) (string, error) {
	run := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = root
		var out bytes.Buffer
		cmd.Stdout = &out
		cmd.Stderr = &out
		err := cmd.Run()
		return strings.TrimSpace(out.String()), err
	}
	// go build -o happily writes a package archive for a library, which would then fail to exec.
	pkg, err := run("list", "-f", "{{.Name}}", "./"+s.name)
	if err != nil {
		return pkg, err
	}
	if pkg != "main" {
		return "./" + s.name + " is package " + pkg + ", not a command", errors.New("no main package")
	}
	return run("build", "-o", s.bin, "./"+s.name)
}
