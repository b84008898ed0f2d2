package store_test

import (
	"context"
	"database/sql"
	"sync"
	"testing"

	_ "github.com/go-sql-driver/mysql"

	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/epro-mq/internal/store"
)

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
			db, err := sql.Open("mysql", dsn)
			if err != nil {
				errs <- err
				return
			}
			defer db.Close()
			errs <- store.Migrate(context.Background(), db)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a replica's migration failed: %v", err)
		}
	}
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM reports").Scan(&n); err != nil {
		t.Fatalf("reports table missing after migrations: %v", err)
	}
}
