//go:build goexperiment.jsonv2

package report_test

import (
	"encoding/json/jsontext"
	jsonv2 "encoding/json/v2"
	"testing"
	"time"

	"github.com/epro-intake/common/report"
)

// BenchmarkStrictDecodeJSONv2 asks what common/report's strict parse could cost: encoding/json/v2 rejects
// duplicate names and invalid UTF-8 by default and unknown members on request, in the one pass that also
// fills the struct, where ParseSubmission walks the body with Decoder.Token and then decodes it three more
// times. x-ParseSubmission is this pass's time as a fraction of ParseSubmission's on the same body. Run with
//
//	GOEXPERIMENT=jsonv2 go test -run '^$' -bench JSONv2 ./report
func BenchmarkStrictDecodeJSONv2(b *testing.B) {
	body := sampleBody(1)
	opts := jsonv2.JoinOptions(jsonv2.RejectUnknownMembers(true), jsontext.AllowDuplicateNames(false), jsontext.AllowInvalidUTF8(false))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		var sub report.Submission
		if err := jsonv2.Unmarshal(body, &sub, opts); err != nil {
			b.Fatal(err)
		}
		// The answers must be an object; v2 has already checked it is well-formed, strictly.
		if len(sub.Answers) == 0 || sub.Answers[0] != '{' {
			b.Fatal("answers not an object")
		}
	}
	v2 := time.Since(start)

	n := max(b.N/4, 200)
	start = time.Now()
	for range n {
		if _, err := report.ParseSubmission(body); err != nil {
			b.Fatal(err)
		}
	}
	current := time.Since(start)
	b.ReportMetric((v2.Seconds()/float64(b.N))/(current.Seconds()/float64(n)), "x-ParseSubmission")

	// The same strictness must hold: a duplicate key has to fail.
	var sub report.Submission
	if err := jsonv2.Unmarshal([]byte(`{"requestId":"a","requestId":"b"}`), &sub, opts); err == nil {
		b.Fatal("json/v2 accepted a duplicate key")
	}
}
