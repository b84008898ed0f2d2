package reportdb

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/epro-intake/common/report"
)

// Values of reports.payload_format: what the payload column holds.
const (
	// FormatSubmission: the report exactly as the patient's app sent it (report.Envelope.Original).
	FormatSubmission = "submission"
	// FormatEnvelope: the Kafka record value, for records that carry no original.
	FormatEnvelope = "envelope"
)

// Stored is what the reports table holds about one request id: enough to tell a retry of the stored report
// from another report under the same id, and to give a retry the original receipt.
type Stored struct {
	RequestID  string
	PatientID  string
	ReceivedAt time.Time
	// ContentSHA256 is report.Submission.ContentHash of the stored report. ContentKnown is false only for a
	// row written before content_sha256 existed whose payload no longer parses as an envelope.
	ContentSHA256 [sha256.Size]byte
	ContentKnown  bool
	// SubmissionSHA256 is the SHA-256 of the report's bytes as the app sent them; nil when the row keeps the
	// envelope instead of the original.
	SubmissionSHA256 []byte
	// Where the stored record was read: a record at these coordinates is the one that wrote the row.
	Topic     string
	Partition int
	Offset    int64
}

// Querier runs a query; *sql.DB, *sql.Conn and *sql.Tx implement it.
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// Lookup returns the stored rows of ids, by request id, in one query; ids without a row are absent. The
// payload is read only for rows that predate content_sha256, to derive the hash from their envelope.
func Lookup(ctx context.Context, db Querier, ids []string) (map[string]Stored, error) {
	if len(ids) == 0 {
		return map[string]Stored{}, nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	rows, err := db.QueryContext(ctx, "SELECT request_id, patient_id, received_at, payload_format, payload_sha256, "+
		"content_sha256, kafka_topic, kafka_partition, kafka_offset, "+
		"CASE WHEN content_sha256 IS NULL THEN payload END "+
		"FROM reports WHERE request_id IN (?"+strings.Repeat(",?", len(ids)-1)+")", args...)
	if err != nil {
		return nil, fmt.Errorf("look up %d reports: %w", len(ids), err)
	}
	defer rows.Close()
	out := make(map[string]Stored, len(ids))
	for rows.Next() {
		var (
			s                      Stored
			format                 string
			payloadSum, content, p []byte
		)
		if err := rows.Scan(&s.RequestID, &s.PatientID, &s.ReceivedAt, &format, &payloadSum, &content,
			&s.Topic, &s.Partition, &s.Offset, &p); err != nil {
			return nil, fmt.Errorf("look up reports: %w", err)
		}
		if format == FormatSubmission {
			s.SubmissionSHA256 = payloadSum
		}
		switch {
		case len(content) == sha256.Size:
			s.ContentSHA256, s.ContentKnown = [sha256.Size]byte(content), true
		case content == nil && format == FormatEnvelope:
			if env, err := report.ParseEnvelope(p); err == nil {
				if h, err := env.Submission().ContentHash(); err == nil {
					s.ContentSHA256, s.ContentKnown = h, true
				}
			}
		}
		out[s.RequestID] = s
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up reports: %w", err)
	}
	return out, nil
}
