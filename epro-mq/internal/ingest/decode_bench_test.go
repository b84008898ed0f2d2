package ingest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/common/report"
)

// benchRecord is a record as epro-api produces it for a report of about 1 KB, shaped like the bench's daily
// symptom diary, sent the way apps write JSON (spaces, unescaped '<' and '&', a \u escape), so that the
// envelope's re-encoded answers differ from the original's bytes.
func benchRecord(b *testing.B) kafka.Message {
	b.Helper()
	var a strings.Builder
	a.WriteString("{ ")
	for q := 1; q <= 24; q++ {
		fmt.Fprintf(&a, `"q%02d": %d, `, q, q%5+1)
	}
	a.WriteString(`"painNrs": 4, "sleepHours": 6.5, "medsTaken": true, "stepsToday": 5210, "symptoms": ["headache", "fatigue"], ` +
		`"note": "Slept badly, woke up twice with a headache. Felt \"foggy\" most of the afternoon; skipped the gym & the pool. ` +
		`\u00dcbelkeit am Abend, sonst ein guter Tag. Forgot the evening tablet, took it at 23:10 instead. Walked < 30 minutes ` +
		`with the dog, knees were fine. Très fatigué après le travail, mais pas de douleur. Rash on the left forearm is fading." }`)
	body := []byte(`{"requestId": "1b4e28ba-2fa1-41d2-883f-0016d3cca427", "patientId": "PAT-000001", "trialId": "TRIAL-EPRO-01", ` +
		`"questionnaireId": "EPRO-DAILY-SYMPTOMS", "questionnaireVersion": "3.2", "submittedAt": "2026-03-01T20:05:00+01:00", ` +
		`"answers": ` + a.String() + `, "deviceId": "ios-000123-iphone14", "appVersion": "2.7.1", "locale": "en-GB"}`)
	sub, err := report.ParseSubmission(body)
	if err != nil {
		b.Fatal(err)
	}
	if err := sub.Validate(time.Time{}, report.Limits{}); err != nil {
		b.Fatal(err)
	}
	value, err := json.Marshal(sub.Envelope(time.Now()))
	if err != nil {
		b.Fatal(err)
	}
	return kafka.Message{
		Topic: report.Topic, Partition: 1, Offset: 1, Key: []byte(sub.PatientID), Value: value,
		Headers: []kafka.Header{{Key: report.HeaderRequestID, Value: []byte(sub.RequestID)}},
	}
}

// BenchmarkDecode is epro-mq's CPU per record before the INSERT: the strict parse of the envelope and of the
// original it carries, their checks and the content hash.
func BenchmarkDecode(b *testing.B) {
	m := benchRecord(b)
	b.SetBytes(int64(len(m.Value)))
	b.ReportAllocs()
	start, ok := infratest.ProcessCPU()
	for b.Loop() {
		if _, err := decode(m); err != nil {
			b.Fatal(err)
		}
	}
	// The process's CPU time per record, the garbage collector's included: steadier than ns/op on a shared
	// machine.
	if end, ok2 := infratest.ProcessCPU(); ok && ok2 {
		b.ReportMetric(float64(end-start)/float64(b.N), "cpu-ns/op")
	}
}
