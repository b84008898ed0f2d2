package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/epro-intake/e2e/internal/stack"
)

// parseDSN parses a go-sql-driver DSN without ever quoting it back, because it may hold a password.
func parseDSN(dsn string) (*mysql.Config, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, errors.New("not a valid go-sql-driver DSN")
	}
	// stored_at and received_at are UTC DATETIME(6); the driver must hand back UTC time.Time values.
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	return cfg, nil
}

func withDB(cfg *mysql.Config, name string) *mysql.Config {
	c := cfg.Clone()
	c.DBName = name
	return c
}

func openDB(cfg *mysql.Config, conns int) (*sql.DB, error) {
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("mysql connector: %w", err)
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	return db, nil
}

func dropDatabase(server *mysql.Config, name string) error {
	db, err := openDB(withDB(server, ""), 1)
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+stack.QuoteIdent(name))
	return err
}

// rowCount counts the reports table. In a database of its own that is the benchmark's rows; on a shared
// one, since is the run's start and only rows received after it count.
func rowCount(ctx context.Context, db *sql.DB, since time.Time) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var n int
	var err error
	if since.IsZero() {
		err = db.QueryRowContext(ctx, "SELECT COUNT(*) FROM reports").Scan(&n)
	} else {
		err = db.QueryRowContext(ctx, "SELECT COUNT(*) FROM reports WHERE received_at >= ?", since.UTC()).Scan(&n)
	}
	return n, err
}

// waitRows polls until the reports table holds at least want rows, or the count has not moved for
// stallAfter, or timeout passes. It returns the last count and when it was first seen.
func waitRows(ctx context.Context, db *sql.DB, since time.Time, want int, poll, stallAfter, timeout time.Duration) (int, time.Time, error) {
	deadline := time.Now().Add(timeout)
	last, lastChange := -1, time.Now()
	var at time.Time
	for {
		n, err := rowCount(ctx, db, since)
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

// storedRow is what the benchmark reads back per row.
type storedRow struct {
	storedAt, receivedAt time.Time
}

// readAllRows reads every row of the benchmark's own database.
func readAllRows(ctx context.Context, db *sql.DB) (map[string][]storedRow, error) {
	rows, err := db.QueryContext(ctx, "SELECT request_id, stored_at, received_at FROM reports")
	if err != nil {
		return nil, fmt.Errorf("read reports: %w", err)
	}
	defer rows.Close()
	out := map[string][]storedRow{}
	for rows.Next() {
		var id string
		var r storedRow
		if err := rows.Scan(&id, &r.storedAt, &r.receivedAt); err != nil {
			return nil, err
		}
		out[id] = append(out[id], r)
	}
	return out, rows.Err()
}

// readRowsFor reads the rows of the given ids, for a database others write to as well.
func readRowsFor(ctx context.Context, db *sql.DB, ids []string) (map[string][]storedRow, error) {
	out := map[string][]storedRow{}
	const chunk = 1000
	for lo := 0; lo < len(ids); lo += chunk {
		part := ids[lo:min(lo+chunk, len(ids))]
		args := make([]any, len(part))
		for i, id := range part {
			args[i] = id
		}
		q := "SELECT request_id, stored_at, received_at FROM reports WHERE request_id IN (?" +
			strings.Repeat(",?", len(part)-1) + ")"
		rows, err := db.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, fmt.Errorf("read reports: %w", err)
		}
		for rows.Next() {
			var id string
			var r storedRow
			if err := rows.Scan(&id, &r.storedAt, &r.receivedAt); err != nil {
				rows.Close()
				return nil, err
			}
			out[id] = append(out[id], r)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// isDeadlock reports MariaDB's 1213, which rolls the statement back and asks for it to be sent again.
func isDeadlock(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1213
}
