// Package migrations holds dlq-worker's versioned schema, applied by goose.
package migrations

import "embed"

// FS holds the SQL migrations.
//
//go:embed *.sql
var FS embed.FS

// VersionTable is goose's bookkeeping table for these migrations. It is not goose's default because epro-mq
// migrates the same database with that default: sharing it would make each service think the other's
// version 1 is its own.
const VersionTable = "dlq_worker_goose_db_version"
