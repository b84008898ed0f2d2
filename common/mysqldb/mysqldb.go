// Package mysqldb opens the suite's MySQL databases and migrates them.
//
// Guarantees: every pool Open returns reads DATETIME columns as time.Time in UTC and writes times truncated
// to the microsecond (parseTime=true, loc=UTC, timeTruncate=1us), whatever the DSN says, because every table
// of the suite holds UTC DATETIME(6) and a value written must read back equal on MySQL, MariaDB and the
// embedded test server alike. Migrate applies goose migrations while holding a MySQL user lock, so replicas
// (of one service or several) that start together on an empty database take turns instead of racing.
package mysqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/pressly/goose/v3"
)

// Pool sizes the connection pool. Open rejects zero values rather than guessing; each service states its own
// in its config.
type Pool struct {
	// MaxOpenConns bounds open connections; it must be positive.
	MaxOpenConns int
	// MaxIdleConns is how many idle connections are kept; zero keeps none.
	MaxIdleConns int
	// ConnMaxLifetime closes a connection after this long; it must be positive, and below the server's
	// wait_timeout and any proxy's idle cut, so a pooled connection is never found dead.
	ConnMaxLifetime time.Duration
	// DialTimeout bounds connecting when the DSN sets no timeout; zero leaves the driver's default.
	DialTimeout time.Duration
}

// Open returns a pool for dsn (go-sql-driver form) with the suite's time options forced. It does not connect.
func Open(dsn string, p Pool) (*sql.DB, error) {
	if p.MaxOpenConns <= 0 || p.MaxIdleConns < 0 || p.ConnMaxLifetime <= 0 {
		return nil, fmt.Errorf("mysql pool: MaxOpenConns (%d) and ConnMaxLifetime (%s) must be positive, MaxIdleConns (%d) not negative",
			p.MaxOpenConns, p.ConnMaxLifetime, p.MaxIdleConns)
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		// The parse error may quote the DSN, password included.
		return nil, errors.New("mysql: the DSN is not a valid go-sql-driver DSN")
	}
	// Without these the driver returns DATETIME as []byte or in the host's zone, and rounds or truncates
	// sub-microsecond digits depending on the server.
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	if err := cfg.Apply(mysql.TimeTruncate(time.Microsecond)); err != nil {
		return nil, fmt.Errorf("mysql config: %w", err)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = p.DialTimeout
	}
	// epro-mq tells a fresh insert from a duplicate by the affected-row count of INSERT … ON DUPLICATE KEY
	// UPDATE (1 per inserted row, 0 per unchanged duplicate); with CLIENT_FOUND_ROWS a duplicate would count 1.
	cfg.ClientFoundRows = false
	// A query with arguments is otherwise prepared, executed and closed: three round trips and a server-side
	// parse each time. Interpolated, it is one; the driver escapes every argument for the connection's
	// charset (utf8mb4 here), and refuses to interpolate where that would be unsafe.
	cfg.InterpolateParams = true
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("mysql connector: %w", err)
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(p.MaxOpenConns)
	db.SetMaxIdleConns(p.MaxIdleConns)
	db.SetConnMaxLifetime(p.ConnMaxLifetime)
	return db, nil
}

// Wait pings db once a second until it answers or ctx ends; under compose MySQL may start after the service.
func Wait(ctx context.Context, db *sql.DB) error {
	for {
		err := db.PingContext(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("mysql not reachable: %w", err)
		case <-time.After(time.Second):
		}
	}
}

// LockName is the MySQL user lock Migrate holds. GET_LOCK names are server-wide, so every migration of the
// suite on one server takes turns. It is the name epro-mq has always used, so replicas of older versions
// and newer ones exclude each other too.
const LockName = "epro-mq.migrate"

// LockWait is how long Migrate waits for another replica's migration before giving up.
const LockWait = time.Minute

// Migrate applies every pending migration of fsys, recording them in goose's version table versionTable
// (each migration set needs its own: two sets sharing one would each take the other's versions for its own),
// while holding LockName.
func Migrate(ctx context.Context, db *sql.DB, fsys fs.FS, versionTable string) error {
	if versionTable == "" {
		return errors.New("migrate: the goose version table is not named")
	}
	provider, err := goose.NewProvider(goose.DialectMySQL, db, fsys, goose.WithTableName(versionTable))
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	// GET_LOCK belongs to a session, so it is taken and released on one pinned connection; goose's own
	// statements may use any other.
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("migration lock connection: %w", err)
	}
	defer conn.Close()
	if err := lock(ctx, conn); err != nil {
		return err
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT RELEASE_LOCK(?)", LockName) //nolint:errcheck // the session ends anyway
	if _, err := provider.Up(ctx); err != nil {
		return fmt.Errorf("apply migrations (%s): %w", versionTable, err)
	}
	return nil
}

func lock(ctx context.Context, conn *sql.Conn) error {
	// Polled with a zero timeout rather than waiting in the server: a server that runs one statement at a
	// time (the embedded stand-in) would otherwise wait forever for a release it cannot run.
	deadline := time.Now().Add(LockWait)
	for {
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, 0)", LockName).Scan(&got); err != nil {
			return fmt.Errorf("take migration lock: %w", err)
		}
		if got.Int64 == 1 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("take migration lock: another replica held it for %s", LockWait)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("take migration lock: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
