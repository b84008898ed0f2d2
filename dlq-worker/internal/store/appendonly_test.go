package store_test

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/epro-intake/dlq-worker/internal/store"
)

// The audit trail is append-only by construction: the Audit type offers no way to change a row, and no code
// in the service writes an UPDATE or DELETE against the table.
func TestAuditIsAppendOnly(t *testing.T) {
	var methods []string
	typ := reflect.TypeFor[*store.Audit]()
	for i := 0; i < typ.NumMethod(); i++ {
		methods = append(methods, typ.Method(i).Name)
	}
	if want := []string{"Append", "Export", "ForDeadLetter", "ForJob"}; !slices.Equal(methods, want) {
		t.Errorf("Audit has methods %v, want only %v", methods, want)
	}

	forbidden := regexp.MustCompile(`(?is)(UPDATE\s+dead_letter_audit|DELETE\s+FROM\s+dead_letter_audit|TRUNCATE\s+(TABLE\s+)?dead_letter_audit|REPLACE\s+INTO\s+dead_letter_audit|DELETE\s+FROM\s+dead_letters|TRUNCATE\s+(TABLE\s+)?dead_letters)`)
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || strings.HasSuffix(path, "_test.go") || !(strings.HasSuffix(path, ".go") || strings.HasSuffix(path, ".sql")) {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		text := string(b)
		if strings.HasSuffix(path, ".sql") {
			// A migration's Down section only serves development databases.
			text, _, _ = strings.Cut(text, "-- +goose Down")
		}
		if m := forbidden.FindString(text); m != "" {
			t.Errorf("%s changes or deletes archived rows: %q", path, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
