package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/epro-intake/e2e/internal/stack"
)

// A service that does not compile stops the suite with the compiler's message (stack.Build carries it); it is
// never left out.
func TestBuildServicesFailsOnABrokenService(t *testing.T) {
	root := t.TempDir()
	for _, name := range stack.Services {
		src := "package main\n\nfunc main() {}\n"
		if name == "dlq-worker" {
			src = "package main\n\nfunc main() { undefinedCall() }\n"
		}
		writeFile(t, filepath.Join(root, name, "go.mod"), "module example.com/"+name+"\n\ngo 1.26.0\n")
		writeFile(t, filepath.Join(root, name, "main.go"), src)
		writeFile(t, filepath.Join(root, name, "etc", name+".yaml"), "Name: "+name+"\n")
	}
	var out bytes.Buffer
	err := buildServices(context.Background(), newConsole(&out, &out), root, filepath.Join(root, "bin"))
	if err == nil {
		t.Fatal("a suite with a broken dlq-worker built")
	}
	for _, want := range []string{"dlq-worker", "undefined: undefinedCall"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if strings.Contains(out.String(), "skipping") {
		t.Errorf("the suite offered to go on without a service:\n%s", out.String())
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
