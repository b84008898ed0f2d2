package types

import (
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/epro-intake/common/errcode"
)

// DiscardReasonCodes is the fixed list a discard must pick from; the note says the rest.
var DiscardReasonCodes = []string{
	"duplicate",             // the same report is stored under another request id
	"test_data",             // sent by a test device or a training site
	"invalid_beyond_repair", // the payload cannot be made into a valid report
	"patient_withdrawn",     // consent withdrawn; the report must not be stored
	"superseded",            // the patient re-submitted the questionnaire
	"other",                 // explained in the note
}

// MaxNoteChars bounds a discard note.
const MaxNoteChars = 1000

var statuses = []string{"", "new", "replayed", "discarded"}

func invalid(field, message string) error {
	return errcode.Field(errcode.ValidationFailed, field, message)
}

// Validate is called by httpx.Parse.
func (r *ListReq) Validate() error {
	if !slices.Contains(statuses, r.Status) {
		return invalid("status", "must be new, replayed or discarded")
	}
	if err := validateFilter(r.ErrorClass, r.TrialID, r.PatientID, r.From, r.To); err != nil {
		return err
	}
	if r.Degraded != "" && r.Degraded != "true" && r.Degraded != "false" {
		return invalid("degraded", "must be true or false")
	}
	if r.Limit < 0 || r.Limit > 1000 {
		return invalid("limit", "must be between 1 and 1000")
	}
	if r.Cursor != "" {
		if _, ok := ParseCursor(r.Cursor); !ok {
			return invalid("cursor", "is not a cursor this API returned")
		}
	}
	return nil
}

// Validate is called by httpx.Parse.
func (r *AuditExportReq) Validate() error {
	if (r.DeadLetterID == 0) == (r.PatientID == "") {
		return invalid("deadLetterId", "give exactly one of deadLetterId and patientId")
	}
	if err := validateFilter("", "", r.PatientID, "", ""); err != nil {
		return err
	}
	if r.Format != "csv" && r.Format != "json" {
		return invalid("format", "must be csv or json")
	}
	return nil
}

// Validate is called by httpx.Parse.
func (r *BulkReplayReq) Validate() error {
	if err := validateFilter(r.ErrorClass, r.TrialID, r.PatientID, r.From, r.To); err != nil {
		return err
	}
	if r.RatePerSecond < 0 {
		return invalid("ratePerSecond", "must not be negative")
	}
	return nil
}

// Validate is called by httpx.Parse.
func (r *DiscardReq) Validate() error {
	if !slices.Contains(DiscardReasonCodes, r.ReasonCode) {
		return invalid("reasonCode", "must be one of "+strings.Join(DiscardReasonCodes, ", "))
	}
	note := strings.TrimSpace(r.Note)
	if note == "" {
		return invalid("note", "is required")
	}
	if !utf8.ValidString(note) || utf8.RuneCountInString(note) > MaxNoteChars {
		return invalid("note", "must be UTF-8 text of at most 1000 characters")
	}
	r.Note = note
	return nil
}

func validateFilter(errorClass, trialID, patientID, from, to string) error {
	for _, f := range []struct{ name, v string }{{"errorClass", errorClass}, {"trialId", trialID}, {"patientId", patientID}} {
		if len(f.v) > 64 || !utf8.ValidString(f.v) {
			return invalid(f.name, "must be at most 64 characters")
		}
	}
	var fromT, toT time.Time
	var ok bool
	if fromT, ok = parseOptionalTime(from); !ok {
		return invalid("from", "must be an RFC 3339 time")
	}
	if toT, ok = parseOptionalTime(to); !ok {
		return invalid("to", "must be an RFC 3339 time")
	}
	if !fromT.IsZero() && !toT.IsZero() && !fromT.Before(toT) {
		return invalid("to", "must be after from")
	}
	return nil
}

func parseOptionalTime(s string) (time.Time, bool) {
	if s == "" {
		return time.Time{}, true
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	return t, err == nil
}

// ParseTime parses a from or to value that Validate accepted; "" is the zero time.
func ParseTime(s string) time.Time {
	t, _ := parseOptionalTime(s)
	return t.UTC()
}

// BadRequest is the error for a request httpx.Parse could not read. Its message is fixed because parse
// errors quote the input.
func BadRequest() error {
	return errcode.New(http.StatusBadRequest, errcode.ValidationFailed, "the request parameters or body could not be read")
}

// Validate is called by httpx.Parse.
func (r *ReconcileReq) Validate() error {
	if r.FromOffset != nil && *r.FromOffset < 0 {
		return invalid("fromOffset", "must not be negative")
	}
	if r.FromTime != "" {
		if r.FromOffset != nil {
			return invalid("fromTime", "give fromOffset or fromTime, not both")
		}
		if _, ok := parseOptionalTime(r.FromTime); !ok {
			return invalid("fromTime", "must be an RFC 3339 time")
		}
	}
	return nil
}
