package report_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/common/report"
)

// Benchmarks of the hot paths through this package, each with the plain library doing the same work measured
// in the same benchmark, so that each reports a ratio that survives a noisy machine (`make bench-go`):
//
//	cd common && go test -run '^$' -bench . -benchtime 3s ./report

// sampleBody is a submission of about 1 KB, shaped like a daily symptom diary: two dozen scored answers, a
// few structured ones and a free-text note with quotes and non-ASCII letters.
func sampleBody(i int) []byte {
	var a strings.Builder
	a.WriteByte('{')
	for q := 1; q <= 24; q++ {
		fmt.Fprintf(&a, `"q%02d":%d,`, q, (i+q)%5+1)
	}
	fmt.Fprintf(&a, `"painNrs":%d,"sleepHours":6.5,"medsTaken":true,"stepsToday":%d,"symptoms":["headache","fatigue"],`, i%11, 4000+i%9000)
	a.WriteString(`"note":"Slept badly, woke up twice with a headache. Felt \"foggy\" most of the afternoon; skipped the gym. ` +
		`Übelkeit am Abend, sonst ein guter Tag. Forgot the evening tablet, took it at 23:10 instead. Walked 30 minutes ` +
		`with the dog, knees were fine. Très fatigué après le travail, mais pas de douleur. Rash on the left forearm is fading."}`)
	id := fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
	return []byte(`{"requestId":"` + id + `","patientId":"PAT-` + fmt.Sprintf("%06d", i%1000) +
		`","trialId":"TRIAL-EPRO-01","questionnaireId":"EPRO-DAILY-SYMPTOMS","questionnaireVersion":"3.2",` +
		`"submittedAt":"` + time.Now().In(time.FixedZone("", 3600)).Format(time.RFC3339) + `","answers":` + a.String() +
		`,"deviceId":"ios-000123-iphone14","appVersion":"2.7.1","locale":"en-GB"}`)
}

var limits = report.Limits{MaxAge: 2160 * time.Hour, MaxSkew: 10 * time.Minute}

// BenchmarkParseValidate is the API's per-request CPU before Kafka: the strict parse (UTF-8, duplicate keys,
// depth, unknown fields) and Validate. x-plain-unmarshal is how many times a plain json.Unmarshal into the
// same struct that costs, i.e. the price of strictness.
func BenchmarkParseValidate(b *testing.B) {
	body := sampleBody(1)
	now := time.Now()
	b.SetBytes(int64(len(body)))
	strictVsPlain(b, func() error {
		sub, err := report.ParseSubmission(body)
		if err != nil {
			return err
		}
		return sub.Validate(now, limits)
	}, func() error { return json.Unmarshal(body, new(report.Submission)) })
}

// BenchmarkEnvelopeParseValidate is epro-mq's per-record CPU before the INSERT: the same strict parse on the
// envelope, then Validate. x-plain-unmarshal is the price of strictness, as above.
func BenchmarkEnvelopeParseValidate(b *testing.B) {
	sub, err := report.ParseSubmission(sampleBody(1))
	if err != nil {
		b.Fatal(err)
	}
	value, _ := json.Marshal(sub.Envelope(time.Now()))
	b.SetBytes(int64(len(value)))
	strictVsPlain(b, func() error {
		env, err := report.ParseEnvelope(value)
		if err != nil {
			return err
		}
		return env.Validate()
	}, func() error { return json.Unmarshal(value, new(report.Envelope)) })
}

// strictVsPlain measures strict as the benchmark, then times plain on its own and reports how many times
// plain's cost strict is.
func strictVsPlain(b *testing.B, strict, plain func() error) {
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		if err := strict(); err != nil {
			b.Fatal(err)
		}
	}
	strictTime := time.Since(start)
	n := max(b.N, 1000)
	start = time.Now()
	for range n {
		if err := plain(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric((strictTime.Seconds()/float64(b.N))/(time.Since(start).Seconds()/float64(n)), "x-plain-unmarshal")
}

// BenchmarkEnvelopeMarshal is the record value the API writes for each report.
func BenchmarkEnvelopeMarshal(b *testing.B) {
	sub, err := report.ParseSubmission(sampleBody(1))
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	value, _ := json.Marshal(sub.Envelope(now))
	b.SetBytes(int64(len(value)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(sub.Envelope(now)); err != nil {
			b.Fatal(err)
		}
	}
}

// reportCPU reports the process's CPU time per operation since start (cpu-ns/op), which includes the garbage
// collector's work on other threads; on a shared machine it is steadier than ns/op.
func reportCPU(b *testing.B, start time.Duration, ok bool) {
	if end, ok2 := infratest.ProcessCPU(); ok && ok2 {
		b.ReportMetric(float64(end-start)/float64(b.N), "cpu-ns/op")
	}
}

// BenchmarkContentHash is the content hash of one report, which both services compute for every report: new
// is ContentHash, old its first version (encoding/json into interface{} values, kept as the test oracle), which
// wrote the same bytes.
func BenchmarkContentHash(b *testing.B) {
	sub, err := report.ParseSubmission(sampleBody(1))
	if err != nil {
		b.Fatal(err)
	}
	if err := sub.Validate(time.Now(), limits); err != nil {
		b.Fatal(err)
	}
	for _, impl := range []struct {
		name string
		hash func(report.Submission) ([32]byte, error)
	}{{"old", report.ContentHashFirstVersion}, {"new", report.Submission.ContentHash}} {
		b.Run(impl.name, func(b *testing.B) {
			b.SetBytes(int64(len(sub.Answers)))
			b.ReportAllocs()
			start, ok := infratest.ProcessCPU()
			for b.Loop() {
				if _, err := impl.hash(sub); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, start, ok)
		})
	}
}
