// Package reportdb is the home of the reports table's schema. epro-mq writes the table and applies these
// migrations at start; epro-api and dlq-worker only read it, and their tests migrate their databases with
// these same migrations, so a change here that breaks a reader breaks the reader's tests.
//
// Guarantees: the migrations are recorded in goose's default version table, goose_db_version, as they were
// when they lived in epro-mq, so databases migrated before keep their history; Migrate applies them under
// mysqldb's migration lock.
package reportdb

import (
	"context"
	"database/sql"
	"embed"

	"github.com/epro-intake/common/mysqldb"
)

// FS holds the goose migrations of the reports table.
//
//go:embed *.sql
var FS embed.FS

// VersionTable is goose's bookkeeping table for these migrations: goose's default, which databases migrated
// by earlier versions of epro-mq already use. Other migration sets in the same database need their own.
const VersionTable = "goose_db_version"

// Migrate applies every pending migration of the reports table, one replica at a time.
func Migrate(ctx context.Context, db *sql.DB) error {
	return mysqldb.Migrate(ctx, db, FS, VersionTable)
}
