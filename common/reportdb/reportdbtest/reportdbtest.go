// Package reportdbtest gives the tests of the reports table's readers a database migrated with the real
// migrations (package reportdb) and a way to store rows in it. It has no hand-written schema of its own.
package reportdbtest

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"testing"
	"time"

	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/common/mysqldb"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/reportdb"
)

// Open returns a pool on a fresh test database (infratest.MySQL) with the reports table migrated, and its DSN.
func Open(t testing.TB) (*sql.DB, string) {
	t.Helper()
	dsn := infratest.MySQL(t)
	db, err := mysqldb.Open(dsn, mysqldb.Pool{MaxOpenConns: 4, MaxIdleConns: 4, ConnMaxLifetime: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	Migrate(t, db)
	return db, dsn
}

// Migrate applies the reports table's migrations to db.
func Migrate(t testing.TB, db *sql.DB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := reportdb.Migrate(ctx, db); err != nil {
		t.Fatalf("reportdbtest: migrate the reports table: %v", err)
	}
}

// Row is a stored report. Fields left zero get a plausible value.
type Row struct {
	RequestID  string
	PatientID  string
	TrialID    string
	ReceivedAt time.Time
	StoredAt   time.Time
	// SenderIssuer and SenderSubject are stored as NULL when SenderSubject is empty, as for a report
	// accepted before epro-api required tokens.
	SenderIssuer  string
	SenderSubject string
	// Original, when set, is stored as epro-mq stores a record that carries the submission as sent: as the
	// payload (payload_format 'submission'), with its content hash. The request and patient ids are then
	// taken from it. Without it the row holds a stand-in envelope and no content hash, as rows written
	// before migration 00003 do.
	Original []byte
	// Topic, Partition and Offset are where the stored record was read; Topic defaults to report.Topic.
	Topic     string
	Partition int
	Offset    int64
}

// Insert stores rows as epro-mq would, every column filled.
func Insert(t testing.TB, db *sql.DB, rows ...Row) {
	t.Helper()
	for _, r := range rows {
		if r.PatientID == "" {
			r.PatientID = "patient-1"
		}
		if r.TrialID == "" {
			r.TrialID = "trial-1"
		}
		if r.ReceivedAt.IsZero() {
			r.ReceivedAt = time.Now().UTC()
		}
		if r.Topic == "" {
			r.Topic = report.Topic
		}
		if r.StoredAt.IsZero() {
			r.StoredAt = r.ReceivedAt
		}
		payload := []byte(`{"requestId":"` + r.RequestID + `"}`)
		format, content := reportdb.FormatEnvelope, []byte(nil)
		if r.Original != nil {
			sub, err := report.ParseSubmission(r.Original)
			if err == nil {
				err = sub.Validate(time.Time{}, report.Limits{})
			}
			h, herr := sub.ContentHash()
			if err != nil || herr != nil {
				t.Fatalf("reportdbtest: original: %v %v", err, herr)
			}
			r.RequestID, r.PatientID, r.TrialID = sub.RequestID, sub.PatientID, sub.TrialID
			payload, format, content = r.Original, reportdb.FormatSubmission, h[:]
		}
		sum := sha256.Sum256(payload)
		var issuer, subject sql.NullString
		if r.SenderSubject != "" {
			issuer = sql.NullString{String: r.SenderIssuer, Valid: true}
			subject = sql.NullString{String: r.SenderSubject, Valid: true}
		}
		if _, err := db.Exec("INSERT INTO reports (request_id, patient_id, trial_id, questionnaire_id, "+
			"questionnaire_version, submitted_at, submitted_offset_minutes, received_at, stored_at, payload, "+
			"payload_sha256, payload_format, content_sha256, kafka_topic, kafka_partition, kafka_offset, "+
			"sender_issuer, sender_subject) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
			r.RequestID, r.PatientID, r.TrialID, "phq9", "1.0", r.ReceivedAt.UTC(), 0, r.ReceivedAt.UTC(),
			r.StoredAt.UTC(), payload, sum[:], format, content, r.Topic, r.Partition, r.Offset, issuer, subject); err != nil {
			t.Fatalf("reportdbtest: insert report %s: %v", r.RequestID, err)
		}
	}
}
