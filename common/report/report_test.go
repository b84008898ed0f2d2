package report_test

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/common/report"
)

func TestCanonicalRequestID(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"1b4e28ba-2fa1-41d2-883f-0016d3cca427", "1b4e28ba-2fa1-41d2-883f-0016d3cca427", true},
		{"1B4E28BA-2FA1-41D2-883F-0016D3CCA427", "1b4e28ba-2fa1-41d2-883f-0016d3cca427", true},
		{"", "", false},
		{"00000000-0000-0000-0000-000000000000", "", false},
		{"1b4e28ba2fa141d2883f0016d3cca427", "", false},
		{"{1b4e28ba-2fa1-41d2-883f-0016d3cca427}", "", false},
		{"1b4e28ba-2fa1-41d2-883f-0016d3cca42z", "", false},
		{"1b4e28ba_2fa1-41d2-883f-0016d3cca427", "", false},
		{"1b4e28ba-2fa1-41d2-883f-0016d3cca4270", "", false},
	} {
		got, ok := report.CanonicalRequestID(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("CanonicalRequestID(%q) = %q, %v", tc.in, got, ok)
		}
		// Validate applies the same rule, and the status endpoint relies on that.
		s := report.Submission{RequestID: tc.in}
		var e *errcode.Error
		validateOK := !(errors.As(s.Validate(time.Time{}, report.Limits{}), &e) && e.Code == errcode.InvalidRequestID)
		if validateOK != tc.ok || (tc.ok && s.RequestID != tc.want) {
			t.Errorf("Validate disagrees on %q", tc.in)
		}
	}
}

func code(err error) string {
	var e *errcode.Error
	if errors.As(err, &e) {
		return e.Code
	}
	if err != nil {
		return "non-errcode: " + err.Error()
	}
	return ""
}

const valid = `{"requestId":"1B4E28BA-2FA1-41D2-883F-0016D3CCA427","patientId":"P-1","trialId":"T-1","questionnaireId":"phq9",` +
	`"questionnaireVersion":"2","submittedAt":"2026-03-01T20:05:00+01:00","answers":{"q1":3,"q2":[1,2]},"locale":"de-DE"}`

func TestParseAndValidateSubmission(t *testing.T) {
	now := time.Date(2026, 3, 1, 19, 10, 0, 0, time.UTC)
	lim := report.Limits{MaxAge: 24 * time.Hour, MaxSkew: 10 * time.Minute}
	for _, tc := range []struct {
		name, body, code string
	}{
		{"valid", valid, ""},
		{"trailing garbage", valid + `{}`, errcode.InvalidJSON},
		{"trailing text", valid + ` x`, errcode.InvalidJSON},
		{"duplicate key", `{"patientId":"a","patientId":"b"}`, errcode.InvalidJSON},
		{"nested duplicate key", `{"answers":{"q1":1,"q1":2}}`, errcode.InvalidJSON},
		{"invalid utf-8", "{\"patientId\":\"\xff\"}", errcode.InvalidJSON},
		{"not an object", `[1]`, errcode.InvalidJSON},
		{"truncated", `{"patientId":`, errcode.InvalidJSON},
		{"too deep", `{"answers":` + strings.Repeat(`[`, 40) + strings.Repeat(`]`, 40) + `}`, errcode.InvalidJSON},
		{"unknown field", strings.Replace(valid, `"locale"`, `"Locale"`, 1), errcode.ValidationFailed},
		{"wrong type", strings.Replace(valid, `"P-1"`, `17`, 1), errcode.ValidationFailed},
		{"bad request id", strings.Replace(valid, `1B4E28BA-`, `1B4E28BAX`, 1), errcode.InvalidRequestID},
		{"missing offset", strings.Replace(valid, `20:05:00+01:00`, `20:05:00`, 1), errcode.ValidationFailed},
		{"too far in the future", strings.Replace(valid, `20:05:00+01:00`, `21:05:00+01:00`, 1), errcode.SubmittedAtOutOfRange},
		{"too old", strings.Replace(valid, `2026-03-01T`, `2026-01-01T`, 1), errcode.SubmittedAtOutOfRange},
		{"empty answers", strings.Replace(valid, `{"q1":3,"q2":[1,2]}`, `{}`, 1), errcode.ValidationFailed},
		{"answers not an object", strings.Replace(valid, `{"q1":3,"q2":[1,2]}`, `[1]`, 1), errcode.ValidationFailed},
		{"missing patient", strings.Replace(valid, `"patientId":"P-1",`, ``, 1), errcode.ValidationFailed},
		{"patient with spaces", strings.Replace(valid, `"P-1"`, `"P 1"`, 1), errcode.ValidationFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := report.ParseSubmission([]byte(tc.body))
			if err == nil {
				err = s.Validate(now, lim)
			}
			if got := code(err); got != tc.code {
				t.Fatalf("code %q; want %q (%v)", got, tc.code, err)
			}
			if err != nil && strings.Contains(err.Error(), "P 1") {
				t.Fatal("error quotes the input")
			}
			if tc.code == "" && s.RequestID != "1b4e28ba-2fa1-41d2-883f-0016d3cca427" {
				t.Fatalf("request id not canonical: %s", s.RequestID)
			}
		})
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	s, err := report.ParseSubmission([]byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(time.Time{}, report.Limits{}); err != nil {
		t.Fatal(err)
	}
	env := s.Envelope(time.Date(2026, 3, 1, 19, 5, 1, 0, time.FixedZone("x", 3600)))
	if env.ReceivedAt.Location() != time.UTC || env.SchemaVersion != report.SchemaVersion {
		t.Fatalf("envelope %+v", env)
	}
	b, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	got, err := report.ParseEnvelope(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Validate(); err != nil {
		t.Fatal(err)
	}
	if string(got.Answers) != string(s.Answers) || got.SubmittedAt != s.SubmittedAt || got.Submission().Locale != "de-DE" {
		t.Fatalf("round trip changed the report: %+v", got)
	}
	env.SchemaVersion = 2
	b, _ = json.Marshal(env)
	got, _ = report.ParseEnvelope(b)
	if code(got.Validate()) != errcode.ValidationFailed {
		t.Fatal("unknown schema version accepted")
	}
}

func TestParseBatch(t *testing.T) {
	items, err := report.ParseBatch([]byte(`{"reports":[`+valid+`,{"x":1}]}`), 100)
	if err != nil || len(items) != 2 {
		t.Fatalf("%d items, %v", len(items), err)
	}
	if _, err := report.ParseBatch([]byte(`{"reports":[]}`), 100); code(err) != errcode.ValidationFailed {
		t.Fatal("empty batch accepted")
	}
	if _, err := report.ParseBatch([]byte(`{"reports":[1,2,3]}`), 2); code(err) != errcode.ValidationFailed {
		t.Fatal("oversized batch accepted")
	}
}

func TestCheckJSONFindsDuplicatesWhereverTheyAre(t *testing.T) {
	many := `{`
	for i := 0; i < 40; i++ {
		many += `"k` + strconv.Itoa(i) + `":1,`
	}
	for _, tc := range []struct{ name, body, field string }{
		{"escaped twin", `{"a":1,"\u0061":2}`, "a"},
		{"nested object", `{"answers":{"q1":1,"q2":{"x":1,"x":2}}}`, "answers.q2.x"},
		{"inside an array", `{"reports":[{"a":1},{"b":1,"b":2}]}`, "reports[1].b"},
		{"large object", many + `"k7":2}`, "k7"},
	} {
		err := report.CheckJSON([]byte(tc.body))
		var e *errcode.Error
		if !errors.As(err, &e) || e.Code != errcode.InvalidJSON || e.Field != tc.field {
			t.Errorf("%s: %v; want INVALID_JSON at %q", tc.name, err, tc.field)
		}
	}
	for _, ok := range []string{`{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}`, `"x"`, `[1,"a\"b",{"k":"v\\"}]`, many + `"z":1}`} {
		if err := report.CheckJSON([]byte(ok)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}

// encoding/json turns an unpaired surrogate escape into U+FFFD without an error; the parser must refuse it
// rather than store altered text, and must keep a proper pair (an emoji) intact.
func TestUnpairedSurrogateEscapesAreRefused(t *testing.T) {
	for _, body := range []string{
		`{"answers":{"note":"\ud800"}}`,
		`{"answers":{"note":"a\udc00b"}}`,
		`{"answers":{"note":"\ud83d\u0041"}}`,
		`{"answers":{"note":"\ud83d"}}`,
		`{"answers":{"\udfff":1}}`,
		`["\uDBFF\uDBFF"]`,
	} {
		if err := report.CheckJSON([]byte(body)); code(err) != errcode.InvalidJSON || !strings.Contains(err.Error(), "surrogate") {
			t.Errorf("%s: %v; want INVALID_JSON naming the surrogate", body, err)
		}
	}
	for _, body := range []string{`{"note":"\ud83d\ude00"}`, `{"note":"\\ud800"}`, `{"note":"\u00e9\uD83D\uDE00x"}`} {
		if err := report.CheckJSON([]byte(body)); err != nil {
			t.Errorf("%s: %v", body, err)
		}
	}
	sub := strings.Replace(valid, `"answers":{`, `"answers":{"note":"\ud83d\ude00 \ud800",`, 1)
	var e *errcode.Error
	if _, err := report.ParseSubmission([]byte(sub)); !errors.As(err, &e) || e.Code != errcode.InvalidJSON || e.Field != "answers" {
		t.Errorf("submission with an unpaired surrogate in answers: %v; want INVALID_JSON at answers", err)
	}
	device := strings.Replace(valid, `"locale":"de-DE"`, `"locale":"de-DE","deviceId":"d-\udc00"`, 1)
	if _, err := report.ParseSubmission([]byte(device)); !errors.As(err, &e) || e.Code != errcode.InvalidJSON || e.Field != "deviceId" {
		t.Errorf("submission with an unpaired surrogate in deviceId: %v; want INVALID_JSON at deviceId", err)
	}
	paired := strings.Replace(valid, `"answers":{`, `"answers":{"note":"\ud83d\ude00",`, 1)
	if _, err := report.ParseSubmission([]byte(paired)); err != nil {
		t.Errorf("submission with a surrogate pair: %v", err)
	}
}

func TestSubmittedAtOffsetMustBeAValidRFC3339Offset(t *testing.T) {
	for _, v := range []string{"2026-03-01T20:05:00+24:00", "2026-03-01T20:05:00-25:00", "2026-03-01T20:05:00+01:60"} {
		if _, err := report.ParseSubmittedAt(v); code(err) != errcode.ValidationFailed {
			t.Errorf("%s: %v; want VALIDATION_FAILED", v, err)
		}
	}
	for _, v := range []string{"2026-03-01T20:05:00+23:59", "2026-03-01T20:05:00-12:00", "2026-03-01T20:05:00.123Z"} {
		if _, err := report.ParseSubmittedAt(v); err != nil {
			t.Errorf("%s: %v", v, err)
		}
	}
}

// The name of an unknown key is client-chosen text: it is never echoed, and a known field in another letter
// case is named in its right case.
func TestUnknownFieldIsNotEchoed(t *testing.T) {
	var e *errcode.Error
	_, err := report.ParseSubmission([]byte(strings.Replace(valid, `"locale"`, `"IBEX-4410-PRIVATE"`, 1)))
	if !errors.As(err, &e) || e.Code != errcode.ValidationFailed || e.Field != "" || strings.Contains(err.Error(), "IBEX") ||
		!strings.Contains(e.Message, "patientId") {
		t.Errorf("unknown key: %v (field %q); want VALIDATION_FAILED listing the fields, the key not echoed", err, e.Field)
	}
	_, err = report.ParseSubmission([]byte(strings.Replace(valid, `"locale"`, `"LOCALE"`, 1)))
	if !errors.As(err, &e) || e.Field != "locale" || strings.Contains(err.Error(), "LOCALE") {
		t.Errorf("key in another case: %v; want the field named as locale", err)
	}
}

// A batch checks its own keys; each item is checked on its own by ParseSubmission, so one bad item does not
// sink the batch.
func TestParseBatchLeavesItemsToParseSubmission(t *testing.T) {
	items, err := report.ParseBatch([]byte("{\"reports\":[{\"requestId\":1,\"requestId\":2},{\"deviceId\":\"\xff\\udc00\"}]}"), 10)
	if err != nil || len(items) != 2 {
		t.Fatalf("batch with two bad items: %d items, %v; want both items back", len(items), err)
	}
	for i, it := range items {
		if _, err := report.ParseSubmission(it); code(err) != errcode.InvalidJSON {
			t.Errorf("item %d: %v; want INVALID_JSON", i, err)
		}
	}
	for _, body := range []string{`{"reports":[],"reports":[]}`, "{\"reports\":[],\"\xff\":1}", `{"reports":[` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `]}`} {
		if _, err := report.ParseBatch([]byte(body), 10); err == nil {
			t.Errorf("%q accepted", body)
		}
	}
}

func TestEnvelopeOfAnotherSchemaSaysSo(t *testing.T) {
	for _, body := range []string{`{"schemaVersion":9}`, `{"schemaVersion":2,"requestId":"x","newField":true}`} {
		_, err := report.ParseEnvelope([]byte(body))
		var e *errcode.Error
		if !errors.As(err, &e) || e.Field != "schemaVersion" || !strings.Contains(e.Message, "unsupported schema version") {
			t.Errorf("%s: %v", body, err)
		}
	}
	if _, err := report.ParseEnvelope([]byte(`{"schemaVersion":1}`)); code(err) != errcode.ValidationFailed || strings.Contains(err.Error(), "schema") {
		t.Errorf("current schema without receivedAt: %v", err)
	}
}

// The sender travels in the envelope; envelopes written before it existed still parse and validate.
func TestEnvelopeSender(t *testing.T) {
	s, err := report.ParseSubmission([]byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(time.Time{}, report.Limits{}); err != nil {
		t.Fatal(err)
	}
	env := s.Envelope(time.Now())
	without, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(without), `"sender"`) {
		t.Fatalf("an envelope without a sender writes one: %s", without)
	}
	got, err := report.ParseEnvelope(without)
	if err != nil || got.Validate() != nil || got.Sender != nil {
		t.Fatalf("envelope without a sender: %+v, %v", got, err)
	}

	env.Sender = &report.Sender{Issuer: "https://idp.test/realms/trial", Subject: "7f9c-patient"}
	with, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	got, err = report.ParseEnvelope(with)
	if err != nil || got.Validate() != nil || got.Sender == nil || *got.Sender != *env.Sender {
		t.Fatalf("envelope with a sender: %+v, %v", got, err)
	}

	for name, snd := range map[string]report.Sender{
		"no subject":         {Issuer: "https://idp.test"},
		"long subject":       {Subject: strings.Repeat("s", report.MaxSenderLen+1)},
		"long issuer":        {Issuer: strings.Repeat("i", report.MaxSenderLen+1), Subject: "s"},
		"control in subject": {Subject: "a\nb"},
	} {
		env.Sender = &snd
		b, _ := json.Marshal(env)
		got, err := report.ParseEnvelope(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if code(got.Validate()) != errcode.ValidationFailed {
			t.Errorf("%s: Validate = %v", name, got.Validate())
		}
	}
	// A development token may have no issuer.
	env.Sender = &report.Sender{Subject: "P-1"}
	if err := env.Validate(); err != nil {
		t.Errorf("sender without issuer: %v", err)
	}
}

// A duplicate key is named by its path, through objects and arrays, wherever it sits; the keys of one object
// are not confused with those of an earlier sibling.
func TestDuplicateKeyField(t *testing.T) {
	for _, tc := range []struct{ body, field string }{
		{`{"patientId":"a","patientId":"b"}`, "patientId"},
		{`{"answers":{"q1":1,"q1":2}}`, "answers.q1"},
		{`{"answers":{"a":[{"y":1},{"x":1,"y":2,"x":3}]}}`, "answers.a[1].x"},
		{`{"answers":{"a":[[{}],[1,{"k":{"z":1,"z":2}}]]}}`, "answers.a[1][1].k.z"},
		{`{"answers":{"\u0071":1,"q":2}}`, "answers.q"},
	} {
		_, err := report.ParseSubmission([]byte(tc.body))
		var e *errcode.Error
		if !errors.As(err, &e) || e.Code != errcode.InvalidJSON || e.Field != tc.field || e.Message != "duplicate key" {
			t.Errorf("%s: %v; want field %q", tc.body, err, tc.field)
		}
	}
	if _, err := report.ParseSubmission([]byte(`{"answers":{"a":[{"x":1},{"x":2}],"b":{"x":1}}}`)); err != nil {
		t.Errorf("equal keys of sibling objects: %v", err)
	}
}
