package conffile_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/epro-intake/common/conffile"
)

type sample struct {
	Name    string
	Timeout time.Duration `json:",default=3s"`
}

func (s sample) Validate() error {
	if s.Name == "bad" {
		return conffile.Prefixed("Inner", errors.Join(errors.New("Size is wrong"), errors.New("Other is wrong")))
	}
	return nil
}

func write(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadExpandsEnvFillsDefaultsAndValidates(t *testing.T) {
	t.Setenv("CONFFILE_TEST_NAME", "svc")
	var s sample
	if err := conffile.Load(write(t, "Name: ${CONFFILE_TEST_NAME}\n"), &s, nil); err != nil {
		t.Fatal(err)
	}
	if s.Name != "svc" || s.Timeout != 3*time.Second {
		t.Fatalf("loaded %+v", s)
	}
	err := conffile.Load(write(t, "Name: bad\n"), &s, nil)
	if err == nil || !strings.Contains(err.Error(), "Inner.Size is wrong") || !strings.Contains(err.Error(), "Inner.Other is wrong") {
		t.Fatalf("Validate's errors not reported with their section: %v", err)
	}
}

func TestLoadRunsRefuseOnTheExpandedContentFirst(t *testing.T) {
	t.Setenv("CONFFILE_TEST_KEY", "Ignored")
	var seen string
	refuse := func(content []byte) error {
		seen = string(content)
		return errors.New("Ignored has no effect")
	}
	var s sample
	err := conffile.Load(write(t, "Name: x\n${CONFFILE_TEST_KEY}: 1\n"), &s, refuse)
	if err == nil || err.Error() != "Ignored has no effect" {
		t.Fatalf("refuse's error not returned: %v", err)
	}
	if !strings.Contains(seen, "Ignored: 1") || s.Name != "" {
		t.Fatalf("refuse saw %q; loaded %+v before refusing", seen, s)
	}
	if err := conffile.Load(filepath.Join(t.TempDir(), "missing.yaml"), &s, nil); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}
