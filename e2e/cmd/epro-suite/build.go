package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/epro-intake/e2e/internal/stack"
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

// buildServices builds every service into <root>/bin, each on its own go.mod as a release builds it. Every
// service is required: one that is missing or does not build stops the suite with the compiler's message,
// because a suite without it (dlq-worker's ops page, say) would look like a working one.
func buildServices(ctx context.Context, con *console, root string, ports map[string]int) ([]service, error) {
	binDir := filepath.Join(root, "bin")
	var out []service
	for _, name := range serviceNames {
		s := service{
			name:   name,
			bin:    filepath.Join(binDir, name),
			config: filepath.Join(name, "etc", name+".yaml"),
			port:   ports[name],
		}
		if _, err := os.Stat(filepath.Join(root, s.config)); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, s)
	}
	con.Printf("building %v", serviceNames)
	if err := stack.Build(ctx, root, binDir, serviceNames...); err != nil {
		return nil, err
	}
	return out, nil
}
