package report

import (
	"bytes"
	"strings"
	"testing"
)

// canonicalCases are answers that the one-pass canonicalizer must write exactly as the first version did.
// Some are refused by ParseSubmission but reach ContentHash all the same through records of other producers.
var canonicalCases = []string{
	``, ` `, "\t\r\n ", "\v", "\u00a0", `null`, `true`, `false`, `0`, `"x"`, `[]`, `{}`, ` { } `, `[ [ ] , { } ]`,
	// escapes: one text, however spelled
	`{"a":"<>&"}`, `{"a":"\u003c\u003E\u0026"}`, `{"a":"é"}`, `{"a":"\u00e9"}`, `{"a":"\u00E9"}`,
	`{"a":"\"\\\/\b\f\n\r\t"}`, `{"a":"\u0000\u0001\u001f\u007f\u0080"}`, `{"a":"\u2028\u2029\ufeff"}`,
	// surrogates: pairs, and the U+FFFD that encoding/json made of unpaired ones
	`{"a":"\ud83d\ude00"}`, `{"a":"😀"}`, `{"a":"\ud800"}`, `{"a":"\udc00"}`, `{"a":"\ud800\ud800\udc00"}`,
	`{"a":"\ud800\u0041"}`, `{"a":"\ud800x"}`, `{"a":"x\udfff\ud83d"}`, `{"\ud800":1,"\udc00":2}`,
	// invalid UTF-8, which encoding/json read as U+FFFD per byte
	"{\"a\":\"\xff\xfe\"}", "{\"a\":\"\xed\xa0\x80\"}", "{\"a\":\"\xe2\x82\"}", "{\"\xff\":1,\"\xfe\":2}",
	// key order: UTF-16 code units, so U+E000..U+FFFF after astral characters, unlike byte order
	`{"b":1,"a":2,"c":3}`, `{"\ue000":1,"😀":2,"\uffff":3,"\ud7ff":4,"a":5}`, `{"😀":1,"\ue000":2}`,
	`{"ab":1,"a":2,"":3,"aa":4}`, `{"é":1,"e":2,"f":3,"\u0001":4}`, `{"\"":1,"#":2,"\\":3,"!":4}`,
	// duplicate keys: the last counts, however spelled
	`{"a":1,"a":2}`, `{"a":1,"b":0,"\u0061":[3]}`, `{"a":{"x":1},"a":{"y":2}}`,
	// numbers: one spelling per value
	`[1,1.0,10e-1,1.00000,0.1e1,100e-2]`, `[-0,0,0.0,-0.0e5,0e-7]`, `[1E400,1e+400,10E399,-1e-400]`,
	`[1500,1.5e3,15E+2,0.10,123.456000,-0.000123]`, `[12345678901234567890.12345678901234567890]`,
	`[1e000000000000000000000000000000005,1e-99999999999999999999999999,7e9223372036854775807]`,
	`[0.000000000000000000000000000000000000000000000000001]`, `[1e-000]`, `[9007199254740993]`,
	// nesting and whitespace
	`{"z":[{"b":[1,{"d":null,"c":true}],"a":"x"}],"y":{"q":{"p":{}}}}`, " \t\n{ \"b\" :\n[ 1 ,2 ] , \"a\" : { } }\r\n",
	// what encoding/json's Decoder took for the end of the value
	`{"a":1}]`, `{"a":1}}x`, `1]`, `"x"}`, `null ]garbage`, `[1] ,`,
	// errors
	`{`, `}`, `{"a"}`, `{"a":}`, `{"a":1,}`, `[1,]`, `[1 2]`, `{"a" 1}`, `{a:1}`, `01`, `-`, `1.`, `1e`, `1e+`, `.5`,
	`+1`, `tru`, `truex`, `nul`, `nulll`, `"\x"`, `"\u12"`, `"\u12G4"`, `"abc`, "\"a\x01\"", `{"a":1} {}`, `1 2`,
	"\v1", "1\v", "\u00a01", `[1]x`, `"\'"`, "\ufeff{}",
}

// compareWithOracle checks that ContentHash writes what the first version wrote for s, and fails in the same
// cases.
func compareWithOracle(t *testing.T, s Submission) {
	t.Helper()
	want, wantErr := canonicalContentOracle(s)
	got, err := new(canonicalizer).appendContent(nil, s)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("answers %q: error %v, the first version's %v", s.Answers, err, wantErr)
	}
	if err != nil {
		return
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("answers %q:\n got %s\nwant %s", s.Answers, got, want)
	}
	h, err := s.ContentHash()
	if wh, _ := contentHashOracle(s); err != nil || h != wh {
		t.Fatalf("answers %q: hash %x (%v), the first version's %x", s.Answers, h, err, wh)
	}
}

func oracleSubmission(answers string) Submission {
	return Submission{
		RequestID: "1B4E28BA-2FA1-41D2-883F-0016D3CCA427", PatientID: "PAT-1", TrialID: "TRIAL-7",
		QuestionnaireID: "eq-5d-5l", QuestionnaireVersion: "2.1", SubmittedAt: "2026-03-01T20:05:00.000+01:00",
		Answers: []byte(answers), DeviceID: "device-1", AppVersion: "3.4.1", Locale: "de-DE",
	}
}

func TestContentHashMatchesFirstVersion(t *testing.T) {
	for _, answers := range canonicalCases {
		compareWithOracle(t, oracleSubmission(answers))
	}
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	for _, answers := range []string{deep(10000), deep(10001), `{"a":` + deep(9999) + `}`, `{"a":` + deep(10000) + `}`} {
		compareWithOracle(t, oracleSubmission(answers))
	}
	if _, err := new(canonicalizer).appendContent(nil, oracleSubmission(deep(10001))); err == nil {
		t.Fatal("accepted nesting deeper than encoding/json's limit")
	}
}

// The fields: empty optional ones are left out, the request id and submittedAt are canonical when they parse
// and kept as they are otherwise, and every string is escaped like the answers' strings.
func TestContentHashFieldsMatchFirstVersion(t *testing.T) {
	for _, edit := range []func(*Submission){
		func(s *Submission) {},
		func(s *Submission) { s.DeviceID, s.AppVersion, s.Locale = "", "", "" },
		func(s *Submission) { *s = Submission{} },
		func(s *Submission) { s.RequestID = "not-a-uuid" },
		func(s *Submission) { s.SubmittedAt = "2026-03-01T20:05:00.123456789Z" },
		func(s *Submission) { s.SubmittedAt = "2026-03-01T20:05:00.120-00:00" },
		func(s *Submission) { s.SubmittedAt = "yesterday" },
		func(s *Submission) { s.Locale = "a\"b\\c\x00\x1f\u2028é\xff" },
		func(s *Submission) { s.PatientID, s.Answers = "p\n", nil },
	} {
		s := oracleSubmission(`{"q":1}`)
		edit(&s)
		compareWithOracle(t, s)
	}
}

// Spot checks of the canonical form itself, beside the oracle.
func TestCanonicalAnswers(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{` {"b" : 1.0, "a":["\u003c", 10e-1, -0]} `, `{"a":["<",1,0],"b":1}`},
		{`{"😀":1,"\ue000":2}`, `{"😀":1,"` + "\ue000" + `":2}`},
		{`["\ud800", "\u001F\n"]`, `["` + "\ufffd" + `","\u001f\n"]`},
		{`{"a":1,"a":2}`, `{"a":2}`},
		{`[1500, 0.10, 1E400]`, `[15e2,1e-1,1e400]`},
	} {
		got, err := new(canonicalizer).appendAnswers(nil, []byte(tc.in))
		if err != nil || string(got) != tc.want {
			t.Errorf("%s: got %s (%v), want %s", tc.in, got, err, tc.want)
		}
	}
}

// FuzzContentHash compares ContentHash with its first version on arbitrary answers and one arbitrary field:
// the same canonical bytes whenever the first version accepted them, an error whenever it failed.
//
//	go test -run '^$' -fuzz FuzzContentHash -fuzztime 3m ./report
func FuzzContentHash(f *testing.F) {
	for _, answers := range canonicalCases {
		f.Add([]byte(answers), "de-DE")
	}
	f.Add([]byte(`{"q01":3,"note":"Très \"foggy\""}`), "a\x00\"é")
	f.Fuzz(func(t *testing.T, answers []byte, locale string) {
		s := oracleSubmission("")
		s.Answers, s.Locale = answers, locale
		compareWithOracle(t, s)
	})
}
