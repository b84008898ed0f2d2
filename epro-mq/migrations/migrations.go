// Package migrations holds epro-mq's versioned schema, applied by goose.
package migrations

import "embed"

// FS holds the SQL migrations.
//
//go:embed *.sql
var FS embed.FS

// VersionTable is goose's bookkeeping table for these migrations: goose's default, which existing databases
// already use.
const VersionTable = "goose_db_version"
