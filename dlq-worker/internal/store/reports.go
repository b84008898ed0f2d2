package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/go-sql-driver/mysql"
)

// Reports is a read-only view of epro-mq's reports table, which lives in the same database. dlq-worker
// never writes it: it only asks whether a request id is stored already, before and around a replay.
type Reports struct {
	db *sql.DB
}

// NewReports returns the view on db.
func NewReports(db *sql.DB) *Reports { return &Reports{db: db} }

// reportsChunk bounds the placeholders of one IN list.
const reportsChunk = 500

// Stored returns which of ids are stored in reports. known is false when the reports table does not exist
// (epro-mq has not migrated this database yet, or uses another one): nothing can be said then, which is not
// the same as "not stored".
func (r *Reports) Stored(ctx context.Context, ids []string) (stored map[string]bool, known bool, err error) {
	stored = map[string]bool{}
	var clean []string
	for _, id := range ids {
		if id != "" {
			clean = append(clean, id)
		}
	}
	for len(clean) > 0 {
		n := min(len(clean), reportsChunk)
		chunk := clean[:n]
		clean = clean[n:]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		rows, err := r.db.QueryContext(ctx, "SELECT request_id FROM reports WHERE request_id IN (?"+
			strings.Repeat(",?", len(chunk)-1)+")", args...)
		var me *mysql.MySQLError
		if errors.As(err, &me) && me.Number == mysqlNoSuchTable {
			return map[string]bool{}, false, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("look up stored reports: %w", err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, false, fmt.Errorf("look up stored reports: %w", err)
			}
			stored[id] = true
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, false, fmt.Errorf("look up stored reports: %w", err)
		}
	}
	return stored, true, nil
}

// CountStored returns how many of ids are stored; known as in Stored.
func (r *Reports) CountStored(ctx context.Context, ids []string) (n int, known bool, err error) {
	stored, known, err := r.Stored(ctx, ids)
	return len(stored), known, err
}
