package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/epro-intake/common/errcode"
)

// maxDepth bounds nesting inside answers; questionnaires are shallow, and a deep document is an attack.
const maxDepth = 32

var submissionFields = map[string]bool{
	"requestId": true, "patientId": true, "trialId": true, "questionnaireId": true,
	"questionnaireVersion": true, "submittedAt": true, "answers": true,
	"deviceId": true, "appVersion": true, "locale": true,
}

var envelopeFields = func() map[string]bool {
	m := map[string]bool{"schemaVersion": true, "receivedAt": true}
	for k := range submissionFields {
		m[k] = true
	}
	return m
}()

// CheckJSON reports whether data is exactly one JSON value of valid UTF-8, with no duplicate object keys, no
// nesting deeper than 32 and nothing after it. encoding/json alone accepts all of these, silently replacing
// invalid UTF-8 and keeping the last of two duplicate keys, which would alter a report without a word.
// The error is an *errcode.Error with code INVALID_JSON that never quotes the input.
func CheckJSON(data []byte) error {
	if !utf8.Valid(data) {
		return errcode.Field(errcode.InvalidJSON, "", "body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := walk(dec, "", 0); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errcode.Field(errcode.InvalidJSON, "", "unexpected data after the JSON value")
	}
	return nil
}

func syntaxError(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return errcode.Field(errcode.InvalidJSON, "", fmt.Sprintf("malformed JSON at byte %d", se.Offset))
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errcode.Field(errcode.InvalidJSON, "", "JSON ends early")
	}
	return errcode.Field(errcode.InvalidJSON, "", "malformed JSON")
}

func walk(dec *json.Decoder, path string, depth int) error {
	if depth > maxDepth {
		return errcode.Field(errcode.InvalidJSON, path, "JSON nested too deeply")
	}
	tok, err := dec.Token()
	if err != nil {
		return syntaxError(err)
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	switch delim {
	case '{':
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return syntaxError(err)
			}
			key, _ := kt.(string)
			child := key
			if path != "" {
				child = path + "." + key
			}
			if seen[key] {
				return errcode.Field(errcode.InvalidJSON, child, "duplicate key")
			}
			seen[key] = true
			if err := walk(dec, child, depth+1); err != nil {
				return err
			}
		}
	case '[':
		for i := 0; dec.More(); i++ {
			if err := walk(dec, fmt.Sprintf("%s[%d]", path, i), depth+1); err != nil {
				return err
			}
		}
	}
	if _, err := dec.Token(); err != nil { // the closing delimiter
		return syntaxError(err)
	}
	return nil
}

// objectFields checks that data is a JSON object whose keys are all in allowed, compared case-sensitively
// (encoding/json would match "RequestID" to requestId), and returns its members.
func objectFields(data []byte, allowed map[string]bool) (map[string]json.RawMessage, error) {
	if err := CheckJSON(data); err != nil {
		return nil, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil || fields == nil {
		return nil, errcode.Field(errcode.InvalidJSON, "", "body must be a JSON object")
	}
	for k := range fields {
		if !allowed[k] {
			return nil, errcode.Field(errcode.ValidationFailed, k, "unknown field")
		}
	}
	return fields, nil
}

func stringField(fields map[string]json.RawMessage, name string, dst *string) error {
	raw, ok := fields[name]
	if !ok || string(raw) == "null" {
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return errcode.Field(errcode.ValidationFailed, name, "must be a string")
	}
	return nil
}

// ParseSubmission strictly decodes one report as sent by a patient app. It does not validate field values;
// call Validate for that.
func ParseSubmission(data []byte) (Submission, error) {
	fields, err := objectFields(data, submissionFields)
	if err != nil {
		return Submission{}, err
	}
	var s Submission
	for name, dst := range map[string]*string{
		"requestId": &s.RequestID, "patientId": &s.PatientID, "trialId": &s.TrialID,
		"questionnaireId": &s.QuestionnaireID, "questionnaireVersion": &s.QuestionnaireVersion,
		"submittedAt": &s.SubmittedAt, "deviceId": &s.DeviceID, "appVersion": &s.AppVersion, "locale": &s.Locale,
	} {
		if err := stringField(fields, name, dst); err != nil {
			return Submission{}, err
		}
	}
	if raw, ok := fields["answers"]; ok && string(raw) != "null" {
		s.Answers = append(json.RawMessage(nil), raw...)
	}
	return s, nil
}

// ParseEnvelope strictly decodes a record value from Topic. It does not validate field values.
func ParseEnvelope(data []byte) (Envelope, error) {
	fields, err := objectFields(data, envelopeFields)
	if err != nil {
		return Envelope{}, err
	}
	var e Envelope
	if err := json.Unmarshal(data, &e); err != nil {
		return Envelope{}, errcode.Field(errcode.ValidationFailed, "", "envelope fields have the wrong types")
	}
	if _, ok := fields["receivedAt"]; !ok {
		return Envelope{}, errcode.Field(errcode.ValidationFailed, "receivedAt", "is required")
	}
	return e, nil
}

// ParseBatch strictly decodes the body of POST /v1/reports/batch, {"reports":[...]}, into its items, left
// undecoded so that each one is parsed and judged on its own.
func ParseBatch(data []byte, maxItems int) ([]json.RawMessage, error) {
	fields, err := objectFields(data, map[string]bool{"reports": true})
	if err != nil {
		return nil, err
	}
	var items []json.RawMessage
	raw, ok := fields["reports"]
	if !ok {
		return nil, errcode.Field(errcode.ValidationFailed, "reports", "is required")
	}
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, errcode.Field(errcode.ValidationFailed, "reports", "must be an array of reports")
	}
	if len(items) == 0 {
		return nil, errcode.Field(errcode.ValidationFailed, "reports", "must not be empty")
	}
	if len(items) > maxItems {
		return nil, errcode.Field(errcode.ValidationFailed, "reports", fmt.Sprintf("at most %d reports per batch", maxItems))
	}
	return items, nil
}
