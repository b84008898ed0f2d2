package ingest_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/reportdb"
	"github.com/epro-intake/common/status"
	"github.com/epro-intake/epro-mq/internal/ingest"
	"github.com/epro-intake/epro-mq/internal/store"
)

// submitted is a report as an app would send it, with the answers given, spelled the way apps do and
// encoding/json does not (unescaped <>&, spaces, a \u escape).
func submitted(id, patient, answers string) []byte {
	return []byte("{ \"requestId\": \"" + id + "\", \"patientId\": \"" + patient + "\", \"trialId\": \"trial-1\",\n" +
		" \"questionnaireId\": \"phq9\", \"questionnaireVersion\": \"1\", \"submittedAt\": \"2026-03-01T20:05:00+01:00\",\n" +
		" \"answers\": " + answers + " }")
}

// originalRecord is the record epro-api produces for the submission body: the parsed fields plus the body
// itself as the envelope's Original.
func originalRecord(t testing.TB, offset int64, body []byte) kafka.Message {
	t.Helper()
	sub, err := report.ParseSubmission(body)
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Validate(time.Time{}, report.Limits{}); err != nil {
		t.Fatal(err)
	}
	value, err := json.Marshal(sub.Envelope(time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	return kafka.Message{
		Topic: report.Topic, Partition: 1, Offset: offset, Key: []byte(sub.PatientID), Time: time.Now(), Value: value,
		Headers: []kafka.Header{{Key: report.HeaderRequestID, Value: []byte(sub.RequestID)}},
	}
}

func TestStoresTheSubmissionAsSent(t *testing.T) {
	db := openDB(t)
	in := newIngester(t, ingest.Conf{Group: "g", DLQTopic: report.DLQTopic}, store.NewReports(db), &fakeDLQ{}, nil)
	id := newID()
	body := submitted(id, "p-1", "{\"note\" : \"a <b> & c\\u00e9 \\u003c\",\t\"n\": 1.50}")
	m := originalRecord(t, 7, body)
	if bytes.Contains(m.Value, []byte("a <b>")) {
		t.Fatal("expected the envelope's answers to be re-encoded (the reason for Original)")
	}
	if err := in.HandleBatch(context.Background(), []kafka.Message{m}); err != nil {
		t.Fatal(err)
	}
	var payload, sum, content []byte
	var format string
	if err := db.QueryRow("SELECT payload, payload_sha256, payload_format, content_sha256 FROM reports WHERE request_id = ?", id).
		Scan(&payload, &sum, &format, &content); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(body)
	if !bytes.Equal(payload, body) || !bytes.Equal(sum, want[:]) || format != reportdb.FormatSubmission {
		t.Fatalf("payload %q sha %x format %s; want the bytes sent, byte for byte, and their sha %x", payload, sum, format, want)
	}
	sub, _ := report.ParseSubmission(body)
	h, _ := sub.ContentHash()
	if !bytes.Equal(content, h[:]) {
		t.Fatalf("content_sha256 = %x, want %x", content, h)
	}

	// A record without an original (produced before envelopes carried it) stores its value, as before.
	old := record(t, 8, newID(), "p-1", "1")
	if err := in.HandleBatch(context.Background(), []kafka.Message{old}); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow("SELECT payload, payload_format, content_sha256 FROM reports WHERE request_id = ?", header(old, report.HeaderRequestID)).
		Scan(&payload, &format, &content); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(payload, old.Value) || format != reportdb.FormatEnvelope || len(content) != 32 {
		t.Fatalf("legacy record: payload equal %v, format %s, content %x", bytes.Equal(payload, old.Value), format, content)
	}
}

// An original that does not say what the envelope's fields say is never stored.
func TestOriginalDifferingFromTheFieldsIsPoison(t *testing.T) {
	db := openDB(t)
	dlq := &fakeDLQ{}
	in := newIngester(t, ingest.Conf{Group: "g", DLQTopic: report.DLQTopic}, store.NewReports(db), dlq, nil)
	id := newID()
	sub, err := report.ParseSubmission(submitted(id, "p-1", `{"q1":1}`))
	if err != nil {
		t.Fatal(err)
	}
	sub.Original = submitted(id, "p-1", `{"q1":2}`)
	value, _ := json.Marshal(sub.Envelope(time.Now()))
	m := kafka.Message{Topic: report.Topic, Key: []byte("p-1"), Value: value}
	if err := in.HandleBatch(context.Background(), []kafka.Message{m}); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, "WHERE request_id = ?", id); n != 0 {
		t.Fatal("stored a record whose original differs from its fields")
	}
	if d := dlq.sent(); len(d) != 1 || header(d[0], report.HeaderDLTErrorClass) != report.ErrorClassPoison {
		t.Fatalf("dead letters: %d", len(d))
	}
}

// An envelope whose fields say what its original says, spelled otherwise than epro-api writes them (another
// producer's encoder), is stored with the original's content hash; one whose scalar field differs is poison.
func TestOriginalSpelledOtherwiseIsStoredAndADifferentFieldIsPoison(t *testing.T) {
	db := openDB(t)
	dlq := &fakeDLQ{}
	in := newIngester(t, ingest.Conf{Group: "g", DLQTopic: report.DLQTopic}, store.NewReports(db), dlq, nil)
	record := func(id string, edit func(*report.Envelope)) kafka.Message {
		sub, err := report.ParseSubmission(submitted(id, "p-1", `{"q1": 1, "note": "a <b> & c"}`))
		if err != nil {
			t.Fatal(err)
		}
		env := sub.Envelope(time.Now())
		edit(&env)
		value, _ := json.Marshal(env)
		return kafka.Message{Topic: report.Topic, Key: []byte("p-1"), Value: value}
	}
	respelled, other := newID(), newID()
	msgs := []kafka.Message{
		// The same answers with keys reordered and the number spelled 1.0: the same content.
		record(respelled, func(e *report.Envelope) { e.Answers = json.RawMessage(`{"note":"a <b> & c","q1":1.0}`) }),
		record(other, func(e *report.Envelope) { e.QuestionnaireVersion = "2" }),
	}
	msgs[1].Offset = 1
	if err := in.HandleBatch(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, "WHERE request_id = ?", respelled); n != 1 {
		t.Fatalf("%d rows for the respelled envelope, want 1", n)
	}
	if n := count(t, db, "WHERE request_id = ?", other); n != 0 {
		t.Fatal("stored a record whose questionnaireVersion differs from its original's")
	}
	if d := dlq.sent(); len(d) != 1 || header(d[0], report.HeaderDLTErrorClass) != report.ErrorClassPoison {
		t.Fatalf("dead letters: %d", len(d))
	}
}

// Two different reports under one request id reach the topic (they raced past the API, or it could not
// check): the first stays stored, unchanged; the second is dead-lettered as a conflict, once, and its status
// reads conflict. The same content again stays a silent success.
func TestConflictingContentIsDeadLetteredAndTheRowKept(t *testing.T) {
	for _, tc := range []struct {
		name     string
		together bool // both records in one batch
		redis    bool
	}{
		{"separate batches", false, true},
		{"one batch", true, true},
		{"separate batches without redis", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := openDB(t)
			dlq := &fakeDLQ{}
			var in *ingest.Ingester
			rdb := redisClient(t)
			if tc.redis {
				in = newIngester(t, ingest.Conf{Group: "g", DLQTopic: report.DLQTopic}, store.NewReports(db), dlq, rdb)
			} else {
				in = newIngester(t, ingest.Conf{Group: "g", DLQTopic: report.DLQTopic}, store.NewReports(db), dlq, nil)
			}
			id := newID()
			first := originalRecord(t, 10, submitted(id, "p-1", `{"q1":1}`))
			second := originalRecord(t, 11, submitted(id, "p-1", `{"q1":2}`))
			otherPatient := originalRecord(t, 12, submitted(id, "p-2", `{"q1":1}`))
			retry := originalRecord(t, 13, submitted(id, "p-1", `{ "q1" : 1.0 }`)) // the first, spelled otherwise
			batches := [][]kafka.Message{{first}, {second}, {otherPatient}, {retry}}
			if tc.together {
				batches = [][]kafka.Message{{first, second, otherPatient, retry}}
			}
			for _, b := range batches {
				if err := in.HandleBatch(context.Background(), b); err != nil {
					t.Fatal(err)
				}
			}
			var payload []byte
			var offset int64
			if err := db.QueryRow("SELECT payload, kafka_offset FROM reports WHERE request_id = ?", id).Scan(&payload, &offset); err != nil {
				t.Fatal(err)
			}
			if n := count(t, db, "WHERE request_id = ?", id); n != 1 || offset != 10 || !bytes.Equal(payload, submitted(id, "p-1", `{"q1":1}`)) {
				t.Fatalf("%d rows, offset %d: the first report must stay stored, unchanged", n, offset)
			}
			dead := dlq.sent()
			if len(dead) != 2 {
				t.Fatalf("%d dead letters, want the two conflicting records", len(dead))
			}
			for i, want := range []kafka.Message{second, otherPatient} {
				d := dead[i]
				if !bytes.Equal(d.Value, want.Value) || header(d, report.HeaderDLTErrorClass) != report.ErrorClassConflict ||
					header(d, report.HeaderDLTOriginalOffset) != []string{"11", "12"}[i] || header(d, report.HeaderDLTAttempts) != "1" {
					t.Errorf("dead letter %d: class %q offset %q attempts %q", i, header(d, report.HeaderDLTErrorClass),
						header(d, report.HeaderDLTOriginalOffset), header(d, report.HeaderDLTAttempts))
				}
				if bytes.Contains([]byte(header(d, report.HeaderDLTErrorMessage)), []byte("q1")) {
					t.Error("the dead-letter message quotes content")
				}
			}
			if st := in.Stats(); st.Conflicts != 2 || st.DeadLettered != 2 {
				t.Errorf("stats %+v", st)
			}
			if tc.redis {
				if v := rdb.Get(t.Context(), status.Key(id)).Val(); v != status.Conflict {
					t.Errorf("status = %q, want conflict", v)
				}
			}
		})
	}
}

// Redis says stored, but its receipt holds another content (the API's receipt of a report that lost a race):
// the record is not skipped, and MySQL tells the conflict. The stored report's own retry still is skipped
// once epro-mq cached its receipt.
func TestFastPathSkipsOnlyTheStoredContent(t *testing.T) {
	db := openDB(t)
	rdb := redisClient(t)
	dlq := &fakeDLQ{}
	f := &flakyInserter{next: store.NewReports(db)}
	in := newIngester(t, ingest.Conf{Group: "g", DLQTopic: report.DLQTopic}, f, dlq, rdb)
	id := newID()
	stored := originalRecord(t, 1, submitted(id, "p-1", `{"q1":1}`))
	if err := in.HandleBatch(context.Background(), []kafka.Message{stored}); err != nil {
		t.Fatal(err)
	}
	r, err := status.ParseReceipt(rdb.Get(t.Context(), status.ReceiptKey(id)).Val())
	body := submitted(id, "p-1", `{"q1":1}`)
	sum := sha256.Sum256(body)
	if err != nil || r.PatientID != "p-1" || r.SubmissionSHA256 != hex.EncodeToString(sum[:]) || r.ContentSHA256 == "" {
		t.Fatalf("receipt cached with the stored status: %+v %v", r, err)
	}
	calls := f.calls.Load()
	if err := in.HandleBatch(context.Background(), []kafka.Message{originalRecord(t, 2, body)}); err != nil {
		t.Fatal(err)
	}
	if f.calls.Load() != calls || in.Stats().SkippedByRedis != 1 {
		t.Fatal("the stored report's retry was not skipped by the fast path")
	}
	if err := in.HandleBatch(context.Background(), []kafka.Message{originalRecord(t, 3, submitted(id, "p-1", `{"q1":2}`))}); err != nil {
		t.Fatal(err)
	}
	if f.calls.Load() == calls || in.Stats().SkippedByRedis != 1 {
		t.Fatal("a record with other content was skipped as stored")
	}
	if d := dlq.sent(); len(d) != 1 || header(d[0], report.HeaderDLTErrorClass) != report.ErrorClassConflict {
		t.Fatalf("%d dead letters, want one conflict", len(d))
	}
}
