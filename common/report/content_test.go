package report_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/epro-intake/common/report"
)

// baseSubmission is one report as an app might write it.
const baseSubmission = `{"requestId":"1b4e28ba-2fa1-41d2-883f-0016d3cca427","patientId":"PAT-1","trialId":"TRIAL-7",` +
	`"questionnaireId":"eq-5d-5l","questionnaireVersion":"2.1","submittedAt":"2026-03-01T20:05:00+01:00",` +
	`"answers":{"mobility":2,"pain":1.5,"note":"<b>&</b> é 😀","items":[1,"two",true,null,{"z":0,"a":-0.25}]},` +
	`"deviceId":"device-1","appVersion":"3.4.1","locale":"de-DE"}`

func contentHash(t *testing.T, body string) [32]byte {
	t.Helper()
	s, err := report.ParseSubmission([]byte(body))
	if err != nil {
		t.Fatalf("parse %s: %v", body, err)
	}
	h, err := s.ContentHash()
	if err != nil {
		t.Fatalf("hash %s: %v", body, err)
	}
	return h
}

func TestContentHashIgnoresSpelling(t *testing.T) {
	base := contentHash(t, baseSubmission)
	for name, body := range map[string]string{
		"keys reordered": `{"locale":"de-DE","answers":{"items":[1,"two",true,null,{"a":-0.25,"z":0}],"note":"<b>&</b> é 😀",` +
			`"pain":1.5,"mobility":2},"appVersion":"3.4.1","deviceId":"device-1","submittedAt":"2026-03-01T20:05:00+01:00",` +
			`"questionnaireVersion":"2.1","questionnaireId":"eq-5d-5l","trialId":"TRIAL-7","patientId":"PAT-1",` +
			`"requestId":"1b4e28ba-2fa1-41d2-883f-0016d3cca427"}`,
		"whitespace": "{\n\t\"requestId\" : \"1b4e28ba-2fa1-41d2-883f-0016d3cca427\",\r\n  \"patientId\":\"PAT-1\", \"trialId\":\"TRIAL-7\"," +
			"\"questionnaireId\":\"eq-5d-5l\",\"questionnaireVersion\":\"2.1\",\"submittedAt\":\"2026-03-01T20:05:00+01:00\"," +
			"\"answers\" : { \"mobility\" : 2 , \"pain\" : 1.5 , \"note\" : \"<b>&</b> é 😀\" , \"items\" : [ 1 , \"two\" , true , null , { \"z\" : 0 , \"a\" : -0.25 } ] } ," +
			"\"deviceId\":\"device-1\",\"appVersion\":\"3.4.1\",\"locale\":\"de-DE\"\n}\n",
		"escapes": strings.Replace(baseSubmission, `"<b>&</b> é 😀"`, `"\u003cb\u003E\u0026\u003c/b\u003e \u00e9 \ud83d\ude00"`, 1),
		"escaped key and solidus": strings.Replace(strings.Replace(baseSubmission, `"mobility"`, `"mob\u0069lity"`, 1),
			`"<b>&</b>`, `"<b>&<\/b>`, 1),
		"numbers spelled otherwise": strings.Replace(strings.Replace(strings.Replace(baseSubmission,
			`"mobility":2`, `"mobility":2.000`, 1), `"pain":1.5`, `"pain":15E-1`, 1), `-0.25`, `-25e-2`, 1),
		"zero spelled otherwise": strings.Replace(baseSubmission, `"z":0`, `"z":-0.0e5`, 1),
		"request id upper case":  strings.Replace(baseSubmission, "1b4e28ba-2fa1-41d2-883f-0016d3cca427", "1B4E28BA-2FA1-41D2-883F-0016D3CCA427", 1),
		"submittedAt fraction":   strings.Replace(baseSubmission, "20:05:00+01:00", "20:05:00.000+01:00", 1),
	} {
		if got := contentHash(t, body); got != base {
			t.Errorf("%s: hash differs from the same report spelled otherwise", name)
		}
	}

	// An optional field empty or absent is the same.
	withEmpty := strings.Replace(baseSubmission, `"deviceId":"device-1"`, `"deviceId":""`, 1)
	without := strings.Replace(baseSubmission, `"deviceId":"device-1",`, ``, 1)
	if contentHash(t, withEmpty) != contentHash(t, without) {
		t.Error("an empty deviceId hashes unlike an absent one")
	}
}

func TestContentHashSeesEveryChange(t *testing.T) {
	base := contentHash(t, baseSubmission)
	seen := map[[32]byte]string{base: "base"}
	for name, change := range map[string][2]string{
		"answer value":          {`"mobility":2`, `"mobility":3`},
		"answer type":           {`"mobility":2`, `"mobility":"2"`},
		"answer key":            {`"mobility":2`, `"Mobility":2`},
		"answer text":           {`<b>&</b>`, `<b>&amp;</b>`},
		"answer whitespace":     {`é 😀`, `é  😀`},
		"answer removed":        {`"pain":1.5,`, ``},
		"array order":           {`[1,"two"`, `["two",1`},
		"nested value":          {`"a":-0.25`, `"a":0.25`},
		"null to false":         {`true,null`, `true,false`},
		"large number":          {`"mobility":2`, `"mobility":12345678901234567891`},
		"patient":               {`"PAT-1"`, `"PAT-2"`},
		"trial":                 {`"TRIAL-7"`, `"TRIAL-8"`},
		"questionnaire":         {`"eq-5d-5l"`, `"eq-5d-3l"`},
		"questionnaire version": {`"2.1"`, `"2.2"`},
		"submittedAt instant":   {`20:05:00+01:00`, `20:05:01+01:00`},
		"submittedAt offset":    {`2026-03-01T20:05:00+01:00`, `2026-03-01T19:05:00Z`},
		"device":                {`"device-1"`, `"device-2"`},
		"app version":           {`"3.4.1"`, `"3.4.2"`},
		"locale":                {`"de-DE"`, `"de-AT"`},
		"request id":            {`1b4e28ba-2fa1-41d2-883f-0016d3cca427`, `1b4e28ba-2fa1-41d2-883f-0016d3cca428`},
	} {
		body := strings.Replace(baseSubmission, change[0], change[1], 1)
		if body == baseSubmission {
			t.Fatalf("%s: the change %q is not in the report", name, change[0])
		}
		h := contentHash(t, body)
		if other, dup := seen[h]; dup {
			t.Errorf("%s hashes like %s", name, other)
		}
		seen[h] = name
	}
	// Two large numbers that float64 cannot tell apart still differ.
	a := contentHash(t, strings.Replace(baseSubmission, `"mobility":2`, `"mobility":9007199254740993`, 1))
	b := contentHash(t, strings.Replace(baseSubmission, `"mobility":2`, `"mobility":9007199254740992`, 1))
	if a == b {
		t.Error("2^53+1 and 2^53 hash alike")
	}
}

// The hash of an envelope's submission is the hash of what the app sent: the API's re-encoding (compacted,
// HTML-escaped answers) does not change it, and Original survives the round trip byte for byte.
func TestContentHashSurvivesTheEnvelope(t *testing.T) {
	sent := []byte("{ \"requestId\":\"1B4E28BA-2FA1-41D2-883F-0016D3CCA427\", \"patientId\":\"PAT-1\",\"trialId\":\"TRIAL-7\"," +
		"\"questionnaireId\":\"eq-5d-5l\",\"questionnaireVersion\":\"2.1\",\"submittedAt\":\"2026-03-01T20:05:00+01:00\"," +
		"\"answers\": {\"note\" : \"a < b && c > d \\u00e9\",\n \"n\": 1.50 } }")
	sub, err := report.ParseSubmission(sent)
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Validate(time.Time{}, report.Limits{}); err != nil {
		t.Fatal(err)
	}
	want, err := sub.ContentHash()
	if err != nil {
		t.Fatal(err)
	}
	value, err := json.Marshal(sub.Envelope(time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	env, err := report.ParseEnvelope(value)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(env.Original, sent) {
		t.Fatalf("original after the round trip = %q, want %q", env.Original, sent)
	}
	if bytes.Contains(env.Answers, []byte("<")) {
		t.Fatalf("expected encoding/json to escape the answers (the reason for Original): %s", env.Answers)
	}
	got, err := env.Submission().ContentHash()
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Error("the envelope's submission hashes unlike the submission sent")
	}
}

func TestContentHashRefusesBrokenAnswers(t *testing.T) {
	for _, answers := range []string{`{"a":`, `{"a":1} {"b":2}`, `{"a":01}`} {
		s := report.Submission{RequestID: "1b4e28ba-2fa1-41d2-883f-0016d3cca427", Answers: json.RawMessage(answers)}
		if _, err := s.ContentHash(); err == nil {
			t.Errorf("answers %s: no error", answers)
		}
	}
}
