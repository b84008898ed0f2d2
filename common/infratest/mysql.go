package infratest

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/epro-intake/common/embedded"
)

// Behaviour of the embedded MySQL (go-mysql-server v0.20.0, in-memory
// catalog, reporting version 8.0.31), checked through go-sql-driver by this
// package's tests and compared with MariaDB 10.11:
//
//   - A duplicate on a PRIMARY or UNIQUE key fails with *mysql.MySQLError
//     Number 1062, so errors.As checks on the number work on both. The
//     SQLState is HY000 (MariaDB/MySQL: 23000) and the message is
//     "duplicate unique key given: [a]" (MariaDB: "Duplicate entry 'a' for
//     key 'uk_request_id'"): match on the number only.
//   - A multi-row INSERT that hits a duplicate is rejected as a whole; no row
//     of that statement is kept, as with InnoDB.
//   - INSERT ... ON DUPLICATE KEY UPDATE request_id=request_id and INSERT
//     IGNORE keep the existing row and insert the others; RowsAffected counts
//     only the inserted rows (an UPDATE that changes a row counts 2), as in
//     MySQL.
//   - DATETIME(6) keeps microseconds. Sub-microsecond digits are rounded
//     (.123456789 -> .123457) where MariaDB truncates (-> .123456); the DSN's
//     timeTruncate=1us makes both store the same value.
//   - AUTO_INCREMENT leaves no gaps after duplicates or ignored rows; InnoDB
//     does. Never assert on id values.
//   - Transactions roll back, but there is no row locking: SELECT ... FOR
//     UPDATE is accepted and locks nothing, there are no deadlocks (1213) or
//     lock wait timeouts (1205), and timings mean nothing.
//   - BINARY(32), VARBINARY, LONGBLOB, JSON and multi-statement scripts work.
//   - Importing it costs every test binary about 0.6 s at start-up (4-5 s
//     under -race): its ICU regex engine compiles a WebAssembly module in a
//     package init.

var (
	embeddedMySQLOnce sync.Once
	embeddedMySQLAddr string
	embeddedMySQLErr  error

	adminMu  sync.Mutex
	adminDBs = map[string]*sql.DB{}
)

// MySQL returns a go-sql-driver DSN for a fresh, empty database created for
// this test and dropped when the test ends (kept, and logged, when the test
// failed, for inspection). The database name comes from UniqueName. The DSN
// carries parseTime=true&loc=UTC&timeTruncate=1us&multiStatements=true&charset=utf8mb4.
//
// With EPRO_TEST_MYSQL_DSN set (a server-level DSN such as
// epro:epro@tcp(127.0.0.1:3306)/, whose user may create databases) the
// database is created there with CHARACTER SET utf8mb4; an unreachable server
// fails the test. Without it, one embedded go-mysql-server is started per
// test process on a random 127.0.0.1 port, and its user root has no password.
func MySQL(t testing.TB) string {
	t.Helper()
	serverDSN := envOrEmbedded(t, EnvMySQLDSN, KindMySQL)
	real := serverDSN != ""
	if !real {
		embeddedMySQLOnce.Do(func() {
			var dsn string
			dsn, _, embeddedMySQLErr = embedded.StartMySQL(context.Background(), "", "")
			if embeddedMySQLErr == nil {
				var cfg *mysql.Config
				cfg, embeddedMySQLErr = mysql.ParseDSN(dsn)
				if embeddedMySQLErr == nil {
					embeddedMySQLAddr = cfg.Addr
				}
			}
		})
		if embeddedMySQLErr != nil {
			t.Fatalf("infratest: starting embedded MySQL: %v", embeddedMySQLErr)
		}
		serverDSN = embedded.MySQLDSN(embeddedMySQLAddr, "")
	}

	admin, err := adminDB(serverDSN)
	if err != nil {
		if real {
			t.Fatalf("infratest: MySQL at %s is not usable: %v", EnvMySQLDSN, err)
		}
		t.Fatalf("infratest: embedded MySQL is not usable: %v", err)
	}

	name := UniqueName(t, "t")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx,
		"CREATE DATABASE `"+name+"` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"); err != nil {
		t.Fatalf("infratest: CREATE DATABASE %s: %v", name, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("infratest: test failed; keeping database %s for inspection", name)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+name+"`"); err != nil {
			t.Errorf("infratest: DROP DATABASE %s: %v", name, err)
		}
	})

	dsn, err := withDatabase(serverDSN, name)
	if err != nil {
		t.Fatalf("infratest: building DSN: %v", err)
	}
	return dsn
}

// adminDB returns a process-wide connection pool to the server (no database
// selected), opened and pinged on first use.
func adminDB(serverDSN string) (*sql.DB, error) {
	adminMu.Lock()
	defer adminMu.Unlock()
	if db, ok := adminDBs[serverDSN]; ok {
		return db, nil
	}
	cfg, err := mysql.ParseDSN(serverDSN)
	if err != nil {
		return nil, fmt.Errorf("parsing DSN: %w", err)
	}
	cfg.DBName = ""
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(4)
	db.SetConnMaxIdleTime(30 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("%s: %w", cfg.Addr, err)
	}
	adminDBs[serverDSN] = db
	return db, nil
}

// withDatabase replaces the database and the parameters of a server-level DSN.
// It works on the text rather than through mysql.Config.FormatDSN so that the
// parameters appear exactly as documented (FormatDSN would spell 1us as 1µs),
// while parameters the caller set and this package does not are kept.
func withDatabase(serverDSN, dbName string) (string, error) {
	if _, err := mysql.ParseDSN(serverDSN); err != nil {
		return "", err
	}
	base, query := serverDSN, ""
	if slash := strings.LastIndex(serverDSN, "/"); slash >= 0 {
		if q := strings.Index(serverDSN[slash:], "?"); q >= 0 {
			base, query = serverDSN[:slash+q], serverDSN[slash+q+1:]
		}
		base = base[:slash]
	}
	own, err := url.ParseQuery(embedded.MySQLParams)
	if err != nil {
		return "", err
	}
	extra, err := url.ParseQuery(query)
	if err != nil {
		return "", err
	}
	keys := make([]string, 0, len(extra))
	for k := range extra {
		if _, ok := own[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	params := embedded.MySQLParams
	for _, k := range keys {
		for _, v := range extra[k] {
			params += "&" + url.QueryEscape(k) + "=" + url.QueryEscape(v)
		}
	}
	return base + "/" + dbName + "?" + params, nil
}
