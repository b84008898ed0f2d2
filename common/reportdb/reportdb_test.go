package reportdb_test

import (
	"context"
	"database/sql"
	"sync"
	"testing"
	"time"

	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/common/mysqldb"
	"github.com/epro-intake/common/reportdb"
	"github.com/epro-intake/common/reportdb/reportdbtest"
)

var pool = mysqldb.Pool{MaxOpenConns: 4, MaxIdleConns: 4, ConnMaxLifetime: time.Minute}

// Replicas of epro-mq that start together on an empty database all run migrations at once; every one must
// succeed and the reports table must be there.
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
			errs <- reportdb.Migrate(context.Background(), db)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a replica's migration failed: %v", err)
		}
	}
	db, err := mysqldb.Open(dsn, pool)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM reports").Scan(&n); err != nil {
		t.Fatalf("reports table missing after migrations: %v", err)
	}
	// The history is in goose's default table, where databases migrated by earlier epro-mq versions have it.
	if err := db.QueryRow("SELECT COUNT(*) FROM goose_db_version WHERE version_id = 1").Scan(&n); err != nil || n != 1 {
		t.Fatalf("goose_db_version holds version 1 %d times (%v), want once", n, err)
	}
}

// The helper readers' tests use stores a full row into the migrated table.
func TestInsertFillsARow(t *testing.T) {
	db, _ := reportdbtest.Open(t)
	at := time.Date(2026, 3, 1, 19, 5, 0, 123456000, time.UTC)
	reportdbtest.Insert(t, db, reportdbtest.Row{RequestID: "1b4e28ba-2fa1-41d2-883f-0016d3cca427", ReceivedAt: at})
	var received, stored time.Time
	var patient string
	if err := db.QueryRow("SELECT patient_id, received_at, stored_at FROM reports WHERE request_id = ?",
		"1b4e28ba-2fa1-41d2-883f-0016d3cca427").Scan(&patient, &received, &stored); err != nil {
		t.Fatal(err)
	}
	if patient == "" || !received.Equal(at) || !stored.Equal(at) {
		t.Errorf("row = %q %v %v", patient, received, stored)
	}
}

// Migration 00002 adds the sender columns; a row without a sender (accepted before tokens) has NULLs there.
func TestSenderColumns(t *testing.T) {
	db, _ := reportdbtest.Open(t)
	const withID, withoutID = "1b4e28ba-2fa1-41d2-883f-0016d3cca427", "2c5f39cb-3fb2-42e3-994f-1127e4ddb538"
	reportdbtest.Insert(t, db,
		reportdbtest.Row{RequestID: withID, SenderIssuer: "https://idp.test", SenderSubject: "P-1"},
		reportdbtest.Row{RequestID: withoutID})
	var issuer, subject sql.NullString
	if err := db.QueryRow("SELECT sender_issuer, sender_subject FROM reports WHERE request_id = ?", withID).Scan(&issuer, &subject); err != nil {
		t.Fatal(err)
	}
	if issuer.String != "https://idp.test" || subject.String != "P-1" {
		t.Errorf("sender = %v %v", issuer, subject)
	}
	if err := db.QueryRow("SELECT sender_issuer, sender_subject FROM reports WHERE request_id = ?", withoutID).Scan(&issuer, &subject); err != nil {
		t.Fatal(err)
	}
	if issuer.Valid || subject.Valid {
		t.Errorf("a row without a sender has %v %v", issuer, subject)
	}
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM goose_db_version WHERE version_id = 2").Scan(&n); err != nil || n != 1 {
		t.Fatalf("goose_db_version holds version 2 %d times (%v), want once", n, err)
	}
}
