package consumer_test

import (
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/dlq-worker/internal/consumer"
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
