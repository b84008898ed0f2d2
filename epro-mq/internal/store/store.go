// Package store writes reports to MySQL. Reports are insert-only: nothing here updates or deletes one. The
// table's schema lives in common/reportdb, which epro-mq applies at start.
package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/reportdb"
)

// Report is one row of the reports table.
type Report struct {
	RequestID              string
	PatientID              string
	TrialID                string
	QuestionnaireID        string
	QuestionnaireVersion   string
	SubmittedAt            time.Time // UTC
	SubmittedOffsetMinutes int
	ReceivedAt             time.Time // UTC
	// Payload is the submission exactly as the app sent it (PayloadFormat reportdb.FormatSubmission), or, for
	// a record that carries no original, the record value exactly as read from Kafka (reportdb.FormatEnvelope).
	// payload_sha256 is its SHA-256.
	Payload       []byte
	PayloadFormat string
	// ContentSHA256 is report.Submission.ContentHash of the report.
	ContentSHA256 [sha256.Size]byte
	Topic         string
	Partition     int
	Offset        int64
	// Sender is the envelope's sender (the bearer token's iss and sub); nil for records written before
	// epro-api required tokens, stored as NULLs.
	Sender *report.Sender
}

// Reports is the reports table.
type Reports struct {
	db  *sql.DB
	now func() time.Time
}

// NewReports returns the reports table on db.
func NewReports(db *sql.DB) *Reports {
	return &Reports{db: db, now: time.Now}
}

const columns = 18

// insertPrefix and the suffix make a multi-row insert in which a request id that is already stored counts as
// success. "ON DUPLICATE KEY UPDATE request_id = request_id" rather than INSERT IGNORE, because IGNORE also
// turns data errors into warnings and would store truncated reports; rather than "id = id", which was seen on
// MariaDB 10.11 to apply only part of a concurrent batch without an error.
const insertPrefix = "INSERT INTO reports (request_id, patient_id, trial_id, questionnaire_id, questionnaire_version, " +
	"submitted_at, submitted_offset_minutes, received_at, stored_at, payload, payload_sha256, payload_format, " +
	"content_sha256, kafka_topic, kafka_partition, kafka_offset, sender_issuer, sender_subject) VALUES "

const insertSuffix = " ON DUPLICATE KEY UPDATE request_id = request_id"

// Insert writes rows in one statement, in their order, so auto-increment ids follow partition order.
// Rows whose request id is stored already are left as they are. It returns how many rows it inserted: the
// affected-row count, in which an unchanged duplicate counts 0 (mysqldb.Open turns CLIENT_FOUND_ROWS off).
func (r *Reports) Insert(ctx context.Context, rows []Report) (int64, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	var sb strings.Builder
	sb.Grow(len(insertPrefix) + len(rows)*50 + len(insertSuffix))
	sb.WriteString(insertPrefix)
	args := make([]any, 0, len(rows)*columns)
	storedAt := r.now().UTC()
	for i, row := range rows {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString("(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
		sum := sha256.Sum256(row.Payload)
		var issuer, subject sql.NullString
		if row.Sender != nil {
			issuer = sql.NullString{String: row.Sender.Issuer, Valid: true}
			subject = sql.NullString{String: row.Sender.Subject, Valid: true}
		}
		args = append(args, row.RequestID, row.PatientID, row.TrialID, row.QuestionnaireID, row.QuestionnaireVersion,
			row.SubmittedAt.UTC(), row.SubmittedOffsetMinutes, row.ReceivedAt.UTC(), storedAt, row.Payload, sum[:],
			row.PayloadFormat, row.ContentSHA256[:], row.Topic, row.Partition, row.Offset, issuer, subject)
	}
	sb.WriteString(insertSuffix)
	res, err := r.db.ExecContext(ctx, sb.String(), args...)
	if err != nil {
		return 0, fmt.Errorf("insert %d reports: %w", len(rows), err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("insert %d reports: affected rows: %w", len(rows), err)
	}
	return n, nil
}

// Lookup returns the stored rows of ids (reportdb.Lookup).
func (r *Reports) Lookup(ctx context.Context, ids []string) (map[string]reportdb.Stored, error) {
	return reportdb.Lookup(ctx, r.db, ids)
}
