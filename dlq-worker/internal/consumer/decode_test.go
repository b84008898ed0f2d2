package consumer_test

import (
	"bytes"
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/dlq-worker/internal/consumer"
	"github.com/epro-intake/dlq-worker/internal/store"
)

func TestDecodeReadsEveryDeadLetterHeader(t *testing.T) {
	ts := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	m := kafka.Message{
		Topic: "dlq", Partition: 2, Offset: 99, Time: ts, Key: []byte("P1"),
		Value: []byte(`{"requestId":"1b4e28ba-2fa1-41d2-883f-0016d3cca427","patientId":"P1","trialId":"T1","answers":{"x":1}}`),
		Headers: []kafka.Header{
			{Key: report.HeaderRequestID, Value: []byte("1b4e28ba-2fa1-41d2-883f-0016d3cca427")},
			{Key: report.HeaderDLTOriginalTopic, Value: []byte("epro.reports.v1")},
			{Key: report.HeaderDLTOriginalPartition, Value: []byte("7")},
			{Key: report.HeaderDLTOriginalOffset, Value: []byte("12345")},
			{Key: report.HeaderDLTOriginalTimestamp, Value: []byte("2026-03-01T09:59:00.5Z")},
			{Key: report.HeaderDLTOriginalConsumerGroup, Value: []byte("epro-mq")},
			{Key: report.HeaderDLTErrorClass, Value: []byte("permanent")},
			{Key: report.HeaderDLTErrorMessage, Value: []byte("questionnaire q version 9 is not in the catalogue")},
			{Key: report.HeaderDLTAttempts, Value: []byte("5")},
			{Key: report.HeaderDLTFirstFailure, Value: []byte("2026-03-01T09:59:10Z")},
			{Key: report.HeaderDLTLastFailure, Value: []byte("2026-03-01T09:59:50Z")},
			{Key: report.HeaderReplayOf, Value: []byte("42")},
		},
	}
	dl := consumer.Decode(m, time.Now())
	if dl.DLQTopic != "dlq" || dl.DLQPartition != 2 || dl.DLQOffset != 99 || !dl.DeadLetteredAt.Equal(ts) {
		t.Errorf("position = %s/%d@%d at %v", dl.DLQTopic, dl.DLQPartition, dl.DLQOffset, dl.DeadLetteredAt)
	}
	if dl.OriginalTopic != "epro.reports.v1" || *dl.OriginalPartition != 7 || *dl.OriginalOffset != 12345 ||
		dl.OriginalTimestamp.Format(time.RFC3339Nano) != "2026-03-01T09:59:00.5Z" || dl.OriginalGroup != "epro-mq" {
		t.Errorf("original = %+v", dl)
	}
	if dl.ErrorClass != "permanent" || dl.Attempts != 5 || dl.ErrorMessage == "" ||
		!dl.FirstFailure.Equal(time.Date(2026, 3, 1, 9, 59, 10, 0, time.UTC)) || dl.LastFailure == nil {
		t.Errorf("error = %+v", dl)
	}
	if dl.RequestID != "1b4e28ba-2fa1-41d2-883f-0016d3cca427" || dl.PatientID != "P1" || dl.TrialID != "T1" {
		t.Errorf("ids = %q %q %q", dl.RequestID, dl.PatientID, dl.TrialID)
	}
	if dl.ReplayOf == nil || *dl.ReplayOf != 42 {
		t.Errorf("replay of = %v", dl.ReplayOf)
	}
	if len(dl.Headers) != len(m.Headers) || string(dl.Value) != string(m.Value) || string(dl.Key) != "P1" {
		t.Error("the record is not kept whole")
	}
}

// A poison record may be anything; it is archived with whatever can be read.
func TestDecodeNeverFails(t *testing.T) {
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	for name, m := range map[string]kafka.Message{
		"no headers, not json": {Value: []byte{0xff, 0xfe, 0x00}},
		"bad header values": {Value: []byte(`{"requestId":"has space","patientId":"` + string(make([]byte, 100)) + `"}`),
			Headers: []kafka.Header{
				{Key: report.HeaderDLTOriginalPartition, Value: []byte("x")},
				{Key: report.HeaderDLTAttempts, Value: []byte("-3")},
				{Key: report.HeaderDLTErrorMessage, Value: []byte{0xc3, 0x28}},
				{Key: report.HeaderDLTFirstFailure, Value: []byte("yesterday")},
				{Key: report.HeaderRequestID, Value: []byte("from-header")},
			}},
		"json array": {Value: []byte(`[1,2]`)},
	} {
		dl := consumer.Decode(m, now)
		if dl.ErrorClass != consumer.ErrorClassUnknown || !dl.DeadLetteredAt.Equal(now) {
			t.Errorf("%s: class %q at %v", name, dl.ErrorClass, dl.DeadLetteredAt)
		}
		if dl.OriginalPartition != nil || dl.FirstFailure != nil || dl.Attempts != 0 || dl.PatientID != "" {
			t.Errorf("%s: kept an unreadable value: %+v", name, dl)
		}
		if name == "bad header values" && (dl.RequestID != "from-header" || dl.ErrorMessage != "\uFFFD(") {
			t.Errorf("%s: request id %q, message %q", name, dl.RequestID, dl.ErrorMessage)
		}
	}
}

// What the columns cannot hold makes the row degraded; the columns keep what fits and Raw the whole record.
func TestDecodeDegradesWhatTheColumnsCannotHold(t *testing.T) {
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	bigHeader := kafka.Header{Key: "big", Value: bytes.Repeat([]byte("h"), store.MaxHeadersBytes)}
	for name, tc := range map[string]struct {
		m      kafka.Message
		reason string
		check  func(store.DeadLetter) bool
	}{
		"value over record_value": {kafka.Message{Key: []byte("P1"), Value: bytes.Repeat([]byte("v"), store.MaxValueBytes+1)},
			"value of 16777216 bytes", func(dl store.DeadLetter) bool { return len(dl.Value) == 0 && string(dl.Key) == "P1" }},
		"headers over the column": {kafka.Message{Key: []byte("P1"), Value: []byte("{}"), Headers: []kafka.Header{bigHeader}},
			"larger than the headers column", func(dl store.DeadLetter) bool { return len(dl.Headers) == 0 && string(dl.Value) == "{}" }},
		"key over record_key": {kafka.Message{Key: bytes.Repeat([]byte("k"), store.MaxKeyBytes+1), Value: []byte("{}")},
			"longer than record_key", func(dl store.DeadLetter) bool { return dl.Key == nil }},
	} {
		dl := consumer.Decode(tc.m, now)
		if !dl.Degraded || !strings.Contains(dl.DegradedReason, tc.reason) || !tc.check(dl) {
			t.Errorf("%s: degraded=%v reason=%q", name, dl.Degraded, dl.DegradedReason)
			continue
		}
		raw, err := store.UnmarshalRawRecord(dl.Raw)
		if err != nil || !bytes.Equal(raw.Key, tc.m.Key) || !bytes.Equal(raw.Value, tc.m.Value) || len(raw.Headers) != len(tc.m.Headers) {
			t.Errorf("%s: raw record not kept whole (%v)", name, err)
		}
		if sum := sha256.Sum256(dl.Raw); !bytes.Equal(sum[:], dl.RawSHA256) {
			t.Errorf("%s: raw_sha256 is not the SHA-256 of raw_record", name)
		}
	}
	// A record that fits, and one merely missing its dead-letter headers, are archived as they are.
	for _, m := range []kafka.Message{{Key: []byte("P1"), Value: []byte("{}")}, {Value: []byte("not json")}} {
		if dl := consumer.Decode(m, now); dl.Degraded || dl.Raw != nil {
			t.Errorf("%q degraded: %q", m.Value, dl.DegradedReason)
		}
	}
}

// The refused forms hold nothing a column could refuse, and say where the bytes are when they are not kept.
func TestRefusedFormsArePlain(t *testing.T) {
	m := kafka.Message{Topic: "dlq", Partition: 1, Offset: 7, Key: []byte("P1"), Value: []byte(`{"requestId":"r1","patientId":"P1"}`),
		Headers: []kafka.Header{{Key: report.HeaderDLTErrorClass, Value: []byte("poison")},
			{Key: report.HeaderDLTAttempts, Value: []byte("99999999999")}}}
	dl := consumer.Decode(m, time.Now())
	keep := consumer.Refused(m, dl, "mysql error 1264 (out of range value)", true)
	if !keep.Degraded || keep.Attempts != 0 || keep.Key != nil || len(keep.Value) != 0 || keep.Headers != nil ||
		keep.RequestID != "r1" || keep.PatientID != "P1" || keep.ErrorClass != "poison" || keep.Raw == nil {
		t.Errorf("refused form = %+v", keep)
	}
	last := consumer.Refused(m, keep, "mysql error 1406 (data too long)", false)
	if last.Raw != nil || len(last.RawSHA256) != 32 || last.RequestID != "" || last.PatientID != "" ||
		!strings.Contains(last.DegradedReason, "dlq/1@7") || !strings.Contains(last.DegradedReason, "1264") {
		t.Errorf("last-resort form = %+v", last)
	}
}
