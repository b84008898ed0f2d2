// Package migrations holds epro-mq's versioned schema, applied by goose.
package migrations

import "embed"

// FS holds the SQL migrations.
//
//go:embed *.sql
var FS embed.FS
