package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/epro-intake/e2e/internal/ledger"
	"github.com/epro-intake/e2e/internal/stack"
)

// migrationUp returns the "-- +goose Up" part of every epro-mq migration, in order. Reading the files keeps
// the raw-insert table identical to the one epro-mq creates without making e2e depend on epro-mq's module.
func migrationUp(root string) (string, error) {
	files, err := filepath.Glob(filepath.Join(root, "epro-mq", "migrations", "*.sql"))
	if err != nil || len(files) == 0 {
		return "", fmt.Errorf("no migrations under %s/epro-mq/migrations", root)
	}
	slices.Sort(files)
	var b strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		text := string(data)
		_, up, ok := strings.Cut(text, "-- +goose Up")
		if !ok {
			return "", fmt.Errorf("%s has no -- +goose Up section", f)
		}
		up, _, _ = strings.Cut(up, "-- +goose Down")
		b.WriteString(up)
		b.WriteString("\n")
	}
	return b.String(), nil
}

func applySchema(ctx context.Context, cfg *mysql.Config, schema string) error {
	c := cfg.Clone()
	c.MultiStatements = true
	db, err := stack.OpenMySQL(c, c.DBName, 1)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, schema); err != nil {
		return fmt.Errorf("apply epro-mq migrations: %w", err)
	}
	return nil
}

// waitRows polls until the reports table holds at least want rows, or the count has not moved for
// stallAfter, or timeout passes. It returns the last count and when it was first seen.
func waitRows(ctx context.Context, db *sql.DB, since time.Time, want int, poll, stallAfter, timeout time.Duration) (int, time.Time, error) {
	deadline := time.Now().Add(timeout)
	last, lastChange := -1, time.Now()
	var at time.Time
	for {
		n, err := ledger.Count(ctx, db, since)
		if err != nil {
			return last, at, fmt.Errorf("count rows: %w", err)
		}
		now := time.Now()
		if n != last {
			last, lastChange, at = n, now, now
		}
		if n >= want {
			return n, at, nil
		}
		if now.Sub(lastChange) > stallAfter {
			return n, at, fmt.Errorf("%d of %d rows stored and none for %s", n, want, stallAfter)
		}
		if now.After(deadline) {
			return n, at, fmt.Errorf("%d of %d rows stored after %s", n, want, timeout)
		}
		select {
		case <-ctx.Done():
			return n, at, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// isDeadlock reports MariaDB's 1213, which rolls the statement back and asks for it to be sent again.
func isDeadlock(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1213
}
