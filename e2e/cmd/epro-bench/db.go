package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/epro-intake/e2e/internal/ledger"
)

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
