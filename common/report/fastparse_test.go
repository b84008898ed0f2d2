package report_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/epro-intake/common/report"
)

// apiEnvelope is a record value as epro-api writes it for body: the fields, the original and the sender.
func apiEnvelope(t testing.TB, body []byte) []byte {
	t.Helper()
	sub, err := report.ParseSubmission(body)
	if err != nil {
		t.Fatal(err)
	}
	env := sub.Envelope(time.Date(2026, 3, 1, 20, 0, 0, 123456789, time.UTC))
	env.Sender = &report.Sender{Issuer: "https://id.example", Subject: "P-1"}
	b, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The reports apps send and the records epro-api writes take the single pass; were they to decline, every
// report would quietly pay for the slow parse again.
func TestFastParseTakesTheUsualReport(t *testing.T) {
	for name, body := range map[string][]byte{"sample": sampleBody(7), "valid": []byte(valid)} {
		if _, ok := report.FastSubmission(body); !ok {
			t.Errorf("%s submission: declined", name)
		}
		if _, ok := report.FastEnvelope(apiEnvelope(t, body)); !ok {
			t.Errorf("%s envelope: declined", name)
		}
	}
}

// Each of these is something the single pass must not decide: decodeStrict refuses it, or reads it through
// a rule the single pass does not implement.
func TestFastParseDeclines(t *testing.T) {
	env := string(apiEnvelope(t, []byte(valid)))
	for name, body := range map[string]string{
		"duplicate top-level key": `{"requestId":"a","requestId":"b"}`,
		"duplicate nested key":    `{"answers":{"a":1,"b":{"c":1,"c":2}}}`,
		"unknown key":             `{"requestId":"a","extra":1}`,
		"key in other case":       `{"RequestID":"a"}`,
		"escaped key":             `{"request\u0049d":"a"}`,
		"escaped field string":    `{"requestId":"a\u0062"}`,
		"wrong type":              `{"requestId":1}`,
		"unpaired surrogate":      `{"answers":{"a":"\ud800x"}}`,
		"lone low surrogate":      `{"answers":{"a":"\udc00"}}`,
		"bad escape":              `{"answers":{"a":"\x"}}`,
		"control character":       "{\"answers\":{\"a\":\"\x01\"}}",
		"invalid UTF-8":           "{\"answers\":{\"a\":\"\xff\"}}",
		"leading zero":            `{"answers":{"a":01}}`,
		"bare fraction":           `{"answers":{"a":1.}}`,
		"bare exponent":           `{"answers":{"a":1e}}`,
		"trailing comma":          `{"answers":[1,2,]}`,
		"trailing data":           `{"requestId":"a"} x`,
		"two values":              `{"requestId":"a"}{}`,
		"not an object":           `["requestId"]`,
		"truncated":               `{"answers":{"a":[1,2`,
		"bad literal":             `{"answers":tru}`,
		"too deep":                `{"answers":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`,
	} {
		if _, ok := report.FastSubmission([]byte(body)); ok {
			t.Errorf("submission %s: accepted %s", name, body)
		}
	}
	for name, body := range map[string]string{
		"no receivedAt":           strings.Replace(env, `"receivedAt"`, `"receivedAtX"`, 1),
		"null receivedAt":         strings.Replace(env, `"receivedAt":"2026-03-01T20:00:00.123456789Z"`, `"receivedAt":null`, 1),
		"bad receivedAt":          strings.Replace(env, `"receivedAt":"2026-03-01T20:00:00.123456789Z"`, `"receivedAt":"yesterday"`, 1),
		"fractional version":      strings.Replace(env, `"schemaVersion":1`, `"schemaVersion":1.0`, 1),
		"sender key in any case":  strings.Replace(env, `"issuer"`, `"Issuer"`, 1),
		"sender unknown key":      strings.Replace(env, `"issuer"`, `"iss"`, 1),
		"original escaped":        strings.Replace(env, `"original":"`, `"original":"\u0065`, 1),
		"original not base64":     strings.Replace(env, `"original":"`, `"original":"*`, 1),
		"original not a string":   strings.Replace(env, `"original":"`, `"original":1,"x":"`, 1),
		"duplicate envelope keys": strings.Replace(env, `"schemaVersion":1`, `"schemaVersion":1,"schemaVersion":2`, 1),
	} {
		if body == env {
			t.Fatalf("envelope %s: the replacement did not apply", name)
		}
		if _, ok := report.FastEnvelope([]byte(body)); ok {
			t.Errorf("envelope %s: accepted %s", name, body)
		}
	}
}

// Whatever the single pass accepts, decodeStrict accepts too, with the same result: the single pass is only
// a faster way to the same answer.
func FuzzFastParseAgrees(f *testing.F) {
	for _, seed := range []string{valid, string(sampleBody(3)), `{}`, `{"answers":null}`, `{"answers":[1,-0.5e+3,"\u00e9\ud83d\ude00",{"a":{}}],"locale":null}`,
		`{"a":1,"a":2}`, `{"answers":{"x":[1,{"y":"\u0061"}]}}`, `{"a":"\ud83d\ude00\ud800"}`, `{"`, `}`, ``, `null`} {
		f.Add([]byte(seed))
		f.Add(apiEnvelopeOrNil(seed))
	}
	f.Add([]byte(`{"schemaVersion":1,"receivedAt":"2026-03-01T20:00:00Z","original":"","sender":null,"answers":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if fast, ok := report.FastSubmission(data); ok {
			slow, err := report.SlowSubmission(data)
			if err != nil {
				t.Fatalf("single pass accepted a submission decodeStrict refuses (%v): %q", err, data)
			}
			if !sameSubmission(fast, slow) {
				t.Fatalf("submissions differ:\nfast %+v\nslow %+v", fast, slow)
			}
		}
		if fast, ok := report.FastEnvelope(data); ok {
			slow, err := report.SlowEnvelope(data)
			if err != nil {
				t.Fatalf("single pass accepted an envelope decodeStrict refuses (%v): %q", err, data)
			}
			if fast.SchemaVersion != slow.SchemaVersion || !fast.ReceivedAt.Equal(slow.ReceivedAt) ||
				fast.ReceivedAt.Location().String() != slow.ReceivedAt.Location().String() ||
				!bytes.Equal(fast.Original, slow.Original) || (fast.Sender == nil) != (slow.Sender == nil) ||
				(fast.Sender != nil && *fast.Sender != *slow.Sender) || !sameSubmission(fast.Submission(), slow.Submission()) {
				t.Fatalf("envelopes differ:\nfast %+v\nslow %+v", fast, slow)
			}
		}
	})
}

func apiEnvelopeOrNil(body string) []byte {
	sub, err := report.ParseSubmission([]byte(body))
	if err != nil {
		return nil
	}
	b, _ := json.Marshal(sub.Envelope(time.Unix(1700000000, 5).UTC()))
	return b
}

func sameSubmission(a, b report.Submission) bool {
	return bytes.Equal(a.Answers, b.Answers) && (a.Answers == nil) == (b.Answers == nil) &&
		a.RequestID == b.RequestID && a.PatientID == b.PatientID && a.TrialID == b.TrialID &&
		a.QuestionnaireID == b.QuestionnaireID && a.QuestionnaireVersion == b.QuestionnaireVersion &&
		a.SubmittedAt == b.SubmittedAt && a.DeviceID == b.DeviceID && a.AppVersion == b.AppVersion && a.Locale == b.Locale
}

// special8 finds a quote, a backslash or a control character at any of the eight positions, next to any
// other bytes, and nothing else.
func TestSpecial8(t *testing.T) {
	for c := 0; c < 256; c++ {
		want := c == '"' || c == '\\' || c < 0x20
		for pos := 0; pos < 8; pos++ {
			for _, fill := range []byte{'a', 0xff, 0x80, 0x21, '"' + 1, '\\' - 1} {
				if fill == '"' || fill == '\\' {
					continue
				}
				b := bytes.Repeat([]byte{fill}, 8)
				b[pos] = byte(c)
				if got := report.Special8(binary.LittleEndian.Uint64(b)); got != want {
					t.Fatalf("byte %#x at %d among %#x: got %v, want %v", c, pos, fill, got, want)
				}
			}
		}
	}
}
