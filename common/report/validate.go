package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/epro-intake/common/errcode"
)

// Limits are the checks that depend on the clock. The zero value skips them, which is what the consumer wants:
// a report the API accepted yesterday must not become invalid today.
type Limits struct {
	// MaxAge is how far in the past submittedAt may lie. Zero: no limit.
	MaxAge time.Duration
	// MaxSkew is how far in the future submittedAt may lie, for device clocks that run ahead. Zero: no limit.
	MaxSkew time.Duration
}

const (
	maxIDLen      = 64
	maxVersionLen = 32
	maxDeviceLen  = 128
	maxLocaleLen  = 35
	// MaxSenderLen bounds Sender.Issuer and Sender.Subject (the reports table's sender columns).
	MaxSenderLen = 255
)

// Validate checks every field of s and returns an *errcode.Error naming the first bad field. It also puts the
// request id in its canonical lowercase form, so retries that change only the case still dedupe.
func (s *Submission) Validate(now time.Time, lim Limits) error {
	id, ok := CanonicalRequestID(s.RequestID)
	if !ok {
		return errcode.Field(errcode.InvalidRequestID, "requestId", "must be a UUID such as 1b4e28ba-2fa1-41d2-883f-0016d3cca427")
	}
	s.RequestID = id
	for _, f := range []struct{ name, value string }{
		{"patientId", s.PatientID}, {"trialId", s.TrialID}, {"questionnaireId", s.QuestionnaireID},
	} {
		if err := checkToken(f.name, f.value, maxIDLen, true); err != nil {
			return err
		}
	}
	if err := checkToken("questionnaireVersion", s.QuestionnaireVersion, maxVersionLen, true); err != nil {
		return err
	}
	at, err := ParseSubmittedAt(s.SubmittedAt)
	if err != nil {
		return err
	}
	if lim.MaxAge > 0 && at.Before(now.Add(-lim.MaxAge)) {
		return errcode.Field(errcode.SubmittedAtOutOfRange, "submittedAt", fmt.Sprintf("is more than %s in the past", lim.MaxAge))
	}
	if lim.MaxSkew > 0 && at.After(now.Add(lim.MaxSkew)) {
		return errcode.Field(errcode.SubmittedAtOutOfRange, "submittedAt", fmt.Sprintf("is more than %s in the future", lim.MaxSkew))
	}
	if err := checkAnswers(s.Answers); err != nil {
		return err
	}
	if err := checkText("deviceId", s.DeviceID, maxDeviceLen); err != nil {
		return err
	}
	if err := checkToken("appVersion", s.AppVersion, maxVersionLen, false); err != nil {
		return err
	}
	return checkToken("locale", s.Locale, maxLocaleLen, false)
}

// Validate checks an envelope read from Topic: its schema version, its receivedAt and the submission in it.
func (e *Envelope) Validate() error {
	if e.SchemaVersion != SchemaVersion {
		return errcode.Field(errcode.ValidationFailed, "schemaVersion", fmt.Sprintf("unsupported schema version %d", e.SchemaVersion))
	}
	if e.ReceivedAt.IsZero() {
		return errcode.Field(errcode.ValidationFailed, "receivedAt", "is required")
	}
	s := e.Submission()
	if err := s.Validate(time.Time{}, Limits{}); err != nil {
		return err
	}
	if s.RequestID != e.RequestID {
		return errcode.Field(errcode.InvalidRequestID, "requestId", "must be in canonical lowercase form")
	}
	if e.Sender != nil {
		return e.Sender.Validate()
	}
	return nil
}

// Validate checks that s fits the reports table: a subject, and both values at most MaxSenderLen bytes of
// text without control characters.
func (s *Sender) Validate() error {
	if s.Subject == "" {
		return errcode.Field(errcode.ValidationFailed, "sender.subject", "is required")
	}
	if err := checkText("sender.subject", s.Subject, MaxSenderLen); err != nil {
		return err
	}
	return checkText("sender.issuer", s.Issuer, MaxSenderLen)
}

// ParseSubmittedAt parses an RFC 3339 time that states its offset ("Z" or ±hh:mm); a local time without one
// is ambiguous and rejected.
func ParseSubmittedAt(v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, errcode.Field(errcode.ValidationFailed, "submittedAt", "is required")
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil || len(v) < len("2006-01-02T15:04:05Z") || !offsetInRange(v) {
		return time.Time{}, errcode.Field(errcode.ValidationFailed, "submittedAt", "must be an RFC 3339 time with a timezone offset, such as 2026-03-01T20:05:00+01:00")
	}
	return t, nil
}

// offsetInRange reports whether v's offset ("Z" or ±hh:mm) is one RFC 3339 allows: time.Parse takes hours up
// to 99, so "+24:00" would otherwise pass and shift the time by a day.
func offsetInRange(v string) bool {
	if last := v[len(v)-1]; last == 'Z' || last == 'z' {
		return true
	}
	off := v[len(v)-6:]
	hh, mm := (off[1]-'0')*10+(off[2]-'0'), (off[4]-'0')*10+(off[5]-'0')
	return hh <= 23 && mm <= 59
}

// CanonicalRequestID returns v as a lowercase UUID, or false when v is not a UUID (or is the nil UUID).
func CanonicalRequestID(v string) (string, bool) {
	if len(v) != 36 {
		return "", false
	}
	v = strings.ToLower(v)
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return "", false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return "", false
			}
		}
	}
	if v == "00000000-0000-0000-0000-000000000000" {
		return "", false
	}
	return v, true
}

// checkToken accepts identifiers: letters, digits and . _ : -.
func checkToken(field, v string, max int, required bool) error {
	if v == "" {
		if required {
			return errcode.Field(errcode.ValidationFailed, field, "is required")
		}
		return nil
	}
	if len(v) > max {
		return errcode.Field(errcode.ValidationFailed, field, fmt.Sprintf("must be at most %d characters", max))
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return errcode.Field(errcode.ValidationFailed, field, "may contain only letters, digits and . _ : -")
		}
	}
	return nil
}

func checkText(field, v string, max int) error {
	if len(v) > max {
		return errcode.Field(errcode.ValidationFailed, field, fmt.Sprintf("must be at most %d bytes", max))
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f {
			return errcode.Field(errcode.ValidationFailed, field, "must not contain control characters")
		}
	}
	return nil
}

func checkAnswers(raw json.RawMessage) error {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 {
		return errcode.Field(errcode.ValidationFailed, "answers", "is required")
	}
	// Syntax was checked when the report was parsed (and json.Marshal checks a RawMessage again).
	if trimmed[0] != '{' || trimmed[len(trimmed)-1] != '}' {
		return errcode.Field(errcode.ValidationFailed, "answers", "must be a JSON object")
	}
	if inner := bytes.TrimSpace(trimmed[1:]); inner[0] == '}' {
		return errcode.Field(errcode.ValidationFailed, "answers", "must not be empty")
	}
	return nil
}
