package ledger

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Migrate applies the "-- +goose Up" part of every epro-mq migration under root, in order, to db, which
// must allow several statements per call. Reading the files keeps a reports table made outside epro-mq
// identical to the one epro-mq creates, without making e2e depend on epro-mq's module.
func Migrate(ctx context.Context, db *sql.DB, root string) error {
	files, err := filepath.Glob(filepath.Join(root, "epro-mq", "migrations", "*.sql"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no migrations under %s/epro-mq/migrations", root)
	}
	slices.Sort(files)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		_, up, ok := strings.Cut(string(data), "-- +goose Up")
		if !ok {
			return fmt.Errorf("%s has no -- +goose Up section", f)
		}
		up, _, _ = strings.Cut(up, "-- +goose Down")
		if _, err := db.ExecContext(ctx, up); err != nil {
			return fmt.Errorf("apply %s: %w", filepath.Base(f), err)
		}
	}
	return nil
}
