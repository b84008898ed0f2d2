package mysqldb_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/common/mysqldb"
)

var pool = mysqldb.Pool{MaxOpenConns: 4, MaxIdleConns: 4, ConnMaxLifetime: time.Minute, DialTimeout: 5 * time.Second}

// bareDSN returns the test database's DSN without the time options, and with a zone other than UTC, so
// only Open can make the checks below pass.
func bareDSN(t *testing.T) string {
	t.Helper()
	cfg, err := mysql.ParseDSN(infratest.MySQL(t))
	if err != nil {
		t.Fatal(err)
	}
	bare := mysql.NewConfig()
	bare.User, bare.Passwd, bare.Net, bare.Addr, bare.DBName = cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName
	bare.MultiStatements = true
	bare.Loc, err = time.LoadLocation("America/New_York")
	if err != nil {
		bare.Loc = time.FixedZone("UTC-5", -5*3600)
	}
	return bare.FormatDSN()
}

func open(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := mysqldb.Open(dsn, pool)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func TestOpenForcesUTCTimes(t *testing.T) {
	db := open(t, bareDSN(t))
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, "CREATE TABLE t (id INT PRIMARY KEY, at DATETIME(6) NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	// .1234567894 is truncated to .123456 (timeTruncate=1us); rounding would give .123457.
	in := time.Date(2026, 3, 1, 23, 30, 0, 123456789, time.FixedZone("CET", 3600))
	if _, err := db.ExecContext(ctx, "INSERT INTO t VALUES (1, ?)", in); err != nil {
		t.Fatal(err)
	}
	var out time.Time // scanning into time.Time needs parseTime=true
	if err := db.QueryRowContext(ctx, "SELECT at FROM t WHERE id = 1").Scan(&out); err != nil {
		t.Fatal(err)
	}
	want := time.Date(2026, 3, 1, 22, 30, 0, 123456000, time.UTC)
	if !out.Equal(want) || out.Location() != time.UTC {
		t.Errorf("read back %v (%s), want %v in UTC", out, out.Location(), want)
	}
}

func TestOpenRefusesBadInput(t *testing.T) {
	_, err := mysqldb.Open("user:s3cret@tcp(host:3306/db", pool)
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("bad DSN: err = %v (must fail without quoting the password)", err)
	}
	for _, p := range []mysqldb.Pool{
		{MaxOpenConns: 0, ConnMaxLifetime: time.Minute},
		{MaxOpenConns: 1, ConnMaxLifetime: 0},
		{MaxOpenConns: 1, MaxIdleConns: -1, ConnMaxLifetime: time.Minute},
	} {
		if db, err := mysqldb.Open("u:p@tcp(127.0.0.1:3306)/db", p); err == nil {
			_ = db.Close()
			t.Errorf("pool %+v was accepted", p)
		}
	}
}

var things = fstest.MapFS{
	"00001_things.sql": {Data: []byte("-- +goose Up\nCREATE TABLE things (id INT PRIMARY KEY);\n-- +goose Down\nDROP TABLE things;\n")},
	"00002_more.sql":   {Data: []byte("-- +goose Up\nALTER TABLE things ADD COLUMN name VARCHAR(10) NULL;\n-- +goose Down\nALTER TABLE things DROP COLUMN name;\n")},
}

// Replicas that start together on an empty database all run migrations at once; every one must succeed.
func TestConcurrentMigrationsOnAnEmptyDatabase(t *testing.T) {
	dsn := infratest.MySQL(t)
	const replicas = 4
	var wg sync.WaitGroup
	errs := make(chan error, replicas)
	for i := 0; i < replicas; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, err := mysqldb.Open(dsn, pool)
			if err != nil {
				errs <- err
				return
			}
			defer db.Close()
			errs <- mysqldb.Migrate(context.Background(), db, things, "things_version")
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a replica's migration failed: %v", err)
		}
	}
	db := open(t, dsn)
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM things WHERE name IS NULL").Scan(&n); err != nil {
		t.Fatalf("things table missing after migrations: %v", err)
	}
	if err := db.QueryRow("SELECT COUNT(*) FROM things_version WHERE version_id > 0").Scan(&n); err != nil || n != 2 {
		t.Fatalf("version table holds %d migrations (%v), want 2", n, err)
	}
}

// Two migration sets in one database, each with its own version table, never mistake each other's versions.
func TestMigrationSetsKeepTheirOwnHistory(t *testing.T) {
	db := open(t, infratest.MySQL(t))
	ctx := context.Background()
	other := fstest.MapFS{"00001_other.sql": {Data: []byte("-- +goose Up\nCREATE TABLE other (id INT PRIMARY KEY);\n-- +goose Down\nDROP TABLE other;\n")}}
	if err := mysqldb.Migrate(ctx, db, other, "goose_db_version"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // the second run finds nothing to do
		if err := mysqldb.Migrate(ctx, db, things, "things_version"); err != nil {
			t.Fatalf("run %d: %v", i+1, err)
		}
	}
	for _, table := range []string{"things", "other"} {
		if _, err := db.ExecContext(ctx, "SELECT COUNT(*) FROM "+table); err != nil {
			t.Errorf("table %s: %v", table, err)
		}
	}
	if err := mysqldb.Migrate(ctx, db, things, ""); err == nil {
		t.Error("an unnamed version table was accepted")
	}
}

// While another session holds the lock, Migrate applies nothing; once it is released, Migrate goes ahead.
func TestMigrateWaitsForTheLock(t *testing.T) {
	db := open(t, infratest.MySQL(t))
	ctx := context.Background()
	holder, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	var got int
	if err := holder.QueryRowContext(ctx, "SELECT GET_LOCK(?, 0)", mysqldb.LockName).Scan(&got); err != nil || got != 1 {
		t.Fatalf("take the lock: %d, %v", got, err)
	}

	short, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
	err = mysqldb.Migrate(short, db, things, "things_version")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Migrate while the lock is held: %v, want the deadline", err)
	}
	var n int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name IN ('things', 'things_version')").Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d tables created without the lock (%v)", n, err)
	}

	if _, err := holder.ExecContext(ctx, "SELECT RELEASE_LOCK(?)", mysqldb.LockName); err != nil {
		t.Fatal(err)
	}
	if err := mysqldb.Migrate(ctx, db, things, "things_version"); err != nil {
		t.Fatalf("Migrate after the release: %v", err)
	}
	// Migrate released the lock: another session can take it at once.
	if err := holder.QueryRowContext(ctx, "SELECT GET_LOCK(?, 0)", mysqldb.LockName).Scan(&got); err != nil || got != 1 {
		t.Fatalf("lock still held after Migrate: %d, %v", got, err)
	}
	if _, err := holder.ExecContext(ctx, "SELECT RELEASE_LOCK(?)", mysqldb.LockName); err != nil {
		t.Fatal(err)
	}
}
