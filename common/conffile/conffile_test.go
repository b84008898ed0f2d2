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
	if err := conffile.Load(write(t, "Name: ${CONFFILE_TEST_NAME}\n"), &s, "svc"); err != nil {
		t.Fatal(err)
	}
	if s.Name != "svc" || s.Timeout != 3*time.Second {
		t.Fatalf("loaded %+v", s)
	}
	err := conffile.Load(write(t, "Name: bad\n"), &s, "svc")
	if err == nil || !strings.Contains(err.Error(), "Inner.Size is wrong") || !strings.Contains(err.Error(), "Inner.Other is wrong") {
		t.Fatalf("Validate's errors not reported with their section: %v", err)
	}
}

func TestLoadRefusesIneffectiveKeysInAnyCaseWhateverTheirValue(t *testing.T) {
	t.Setenv("CONFFILE_TEST_KEY", "Ignored")
	ineffective := []conffile.Ineffective{{Key: "Ignored", Why: "nothing reads it"}, {Key: "Outer.Gone", Why: "moved"}}
	var s sample
	err := conffile.Load(write(t, "Name: x\n${CONFFILE_TEST_KEY}: 0\nouter:\n  gone: false\n"), &s, "svc", ineffective...)
	if err == nil || !strings.Contains(err.Error(), "Ignored has no effect in svc (nothing reads it); remove it") ||
		!strings.Contains(err.Error(), "Outer.Gone has no effect in svc (moved)") {
		t.Fatalf("ineffective keys not refused by name: %v", err)
	}
	if s.Name != "" {
		t.Fatalf("loaded %+v before refusing", s)
	}
	if err := conffile.Load(write(t, "Name: x\nOuter:\n  Kept: 1\nGone: 1\n"), &s, "svc", ineffective...); err != nil {
		t.Fatalf("a key of the same name elsewhere refused: %v", err)
	}
	if err := conffile.Load(filepath.Join(t.TempDir(), "missing.yaml"), &s, "svc"); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}
