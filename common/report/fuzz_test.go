package report_test

import (
	"encoding/json"
	"errors"
	"testing"
	"unicode/utf8"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/common/report"
)

// The parser must never panic, must call every syntactically broken or non-UTF-8 body INVALID_JSON, and
// must accept nothing that encoding/json would read differently.
func FuzzParseSubmission(f *testing.F) {
	for _, seed := range []string{valid, `{"a":1,"a":2}`, `{"answers":{"x":[1,{"y":"\u0061"}]}}`, `{"a":"\ud83d\ude00\ud800"}`, `{"`, `}`, `[`, `{"a":"\`, ``, `null`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := report.ParseSubmission(data)
		var e *errcode.Error
		if err != nil && !errors.As(err, &e) {
			t.Fatalf("error is not an errcode.Error: %v", err)
		}
		if (!json.Valid(data) || !utf8.Valid(data)) && (err == nil || e.Code != errcode.InvalidJSON) {
			t.Fatalf("broken input got %v", err)
		}
		if err == nil && s.Answers != nil && !json.Valid(s.Answers) {
			t.Fatal("accepted answers that are not JSON")
		}
		if report.CheckJSON(data) == nil && !json.Valid(data) {
			t.Fatal("CheckJSON accepted invalid JSON")
		}
	})
}
