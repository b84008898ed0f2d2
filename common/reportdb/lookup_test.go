package reportdb_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"testing"
	"time"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/reportdb"
	"github.com/epro-intake/common/reportdb/reportdbtest"
)

const original = "{\"requestId\":\"1B4E28BA-2FA1-41D2-883F-0016D3CCA427\", \"patientId\":\"PAT-1\",\"trialId\":\"TRIAL-7\"," +
	"\"questionnaireId\":\"phq9\",\"questionnaireVersion\":\"1.0\",\"submittedAt\":\"2026-03-01T20:05:00+01:00\"," +
	"\"answers\":{\"note\": \"a < b \\u0026 c\"}}"

func TestLookup(t *testing.T) {
	db, _ := reportdbtest.Open(t)
	at := time.Date(2026, 3, 1, 19, 5, 0, 123456000, time.UTC)
	reportdbtest.Insert(t, db, reportdbtest.Row{Original: []byte(original), ReceivedAt: at})

	// A row as epro-mq wrote it before migration 00003: the envelope as payload, no content hash.
	sub, err := report.ParseSubmission([]byte(original))
	if err != nil {
		t.Fatal(err)
	}
	sub.RequestID, sub.Original = "2b4e28ba-2fa1-41d2-883f-0016d3cca427", nil
	legacy := sub.Envelope(at)
	value, err := json.Marshal(legacy)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(value)
	if _, err := db.Exec("INSERT INTO reports (request_id, patient_id, trial_id, questionnaire_id, questionnaire_version, "+
		"submitted_at, submitted_offset_minutes, received_at, stored_at, payload, payload_sha256, kafka_topic, "+
		"kafka_partition, kafka_offset) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", legacy.RequestID, legacy.PatientID,
		legacy.TrialID, "phq9", "1.0", at, 60, at, at, value, sum[:], "epro.reports.v1", 2, 7); err != nil {
		t.Fatal(err)
	}

	got, err := reportdb.Lookup(t.Context(), db, []string{"1b4e28ba-2fa1-41d2-883f-0016d3cca427", legacy.RequestID, "3b4e28ba-2fa1-41d2-883f-0016d3cca427"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("got %d rows, want 2: %+v", len(got), got)
	}
	want, err := sub.ContentHash() // the legacy row's content: same as the original's but for the request id
	if err != nil {
		t.Fatal(err)
	}
	old := got[legacy.RequestID]
	if !old.ContentKnown || old.ContentSHA256 != want || old.SubmissionSHA256 != nil || old.PatientID != "PAT-1" ||
		!old.ReceivedAt.Equal(at) || old.Partition != 2 || old.Offset != 7 {
		t.Errorf("legacy row = %+v", old)
	}

	row := got["1b4e28ba-2fa1-41d2-883f-0016d3cca427"]
	orig, _ := report.ParseSubmission([]byte(original))
	_ = orig.Validate(time.Time{}, report.Limits{})
	wantContent, _ := orig.ContentHash()
	wantSum := sha256.Sum256([]byte(original))
	if !row.ContentKnown || row.ContentSHA256 != wantContent || !bytes.Equal(row.SubmissionSHA256, wantSum[:]) ||
		!row.ReceivedAt.Equal(at) || row.PatientID != "PAT-1" {
		t.Errorf("row = %+v", row)
	}
	var payload []byte
	if err := db.QueryRow("SELECT payload FROM reports WHERE request_id = ?", row.RequestID).Scan(&payload); err != nil || string(payload) != original {
		t.Errorf("payload = %q (%v), want the original", payload, err)
	}

	if none, err := reportdb.Lookup(t.Context(), db, nil); err != nil || len(none) != 0 {
		t.Errorf("no ids: %v %v", none, err)
	}
}
