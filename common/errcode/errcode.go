// Package errcode defines the error shape every HTTP API of the suite answers with, and the stable codes in it.
//
// An Error never carries request content: its message is written by the server, so a response cannot echo a
// patient's answers back, and neither can a log line that prints it.
package errcode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// Stable codes. Clients switch on these; never rename one.
const (
	InvalidJSON           = "INVALID_JSON"
	ValidationFailed      = "VALIDATION_FAILED"
	InvalidRequestID      = "INVALID_REQUEST_ID"
	PayloadTooLarge       = "PAYLOAD_TOO_LARGE"
	UnsupportedMediaType  = "UNSUPPORTED_MEDIA_TYPE"
	SubmittedAtOutOfRange = "SUBMITTED_AT_OUT_OF_RANGE"
	IngestUnavailable     = "INGEST_UNAVAILABLE"
	RateLimited           = "RATE_LIMITED"
	NotFound              = "NOT_FOUND"
	Unauthorized          = "UNAUTHORIZED"
	Forbidden             = "FORBIDDEN"
	Conflict              = "CONFLICT"
	MethodNotAllowed      = "METHOD_NOT_ALLOWED"
	Timeout               = "TIMEOUT"
	Internal              = "INTERNAL"
	// RequestIDConflict (409): the requestId was already used for a report with other content, or for another
	// patient; nothing was taken. The report must be sent under a new requestId.
	RequestIDConflict = "REQUEST_ID_CONFLICT"

	// PatientMismatch: a report's patientId is not the patient the bearer token speaks for (403).
	PatientMismatch = "PATIENT_MISMATCH"
	// TrialMismatch: a report's trialId is not the trial the bearer token is restricted to (403).
	TrialMismatch = "TRIAL_MISMATCH"
)

// maxField is longer than any field path of a report ("answers.<item id>" with ids of up to 64 characters).
const maxField = 100

// Error is an API error: an HTTP status, a stable code, a message for people and, for validation, the field.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
	// RetryAfter, when positive, is sent as the Retry-After header in seconds.
	RetryAfter int `json:"-"`
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s (%s)", e.Code, e.Message, e.Field)
	}
	return e.Code + ": " + e.Message
}

// New returns an Error with the given status, code and message.
func New(status int, code, message string) *Error {
	return &Error{Status: status, Code: code, Message: message}
}

// Field returns a validation Error about one field (400, or 422 for SUBMITTED_AT_OUT_OF_RANGE). A field name
// that does not look like one is dropped: parsers name the offending key, and a key is client input that may
// be free text.
func Field(code, field, message string) *Error {
	if !SafeField(field) {
		field = ""
	}
	status := http.StatusBadRequest
	if code == SubmittedAtOutOfRange {
		status = http.StatusUnprocessableEntity
	}
	return &Error{Status: status, Code: code, Message: message, Field: field}
}

// Unavailable returns a 503 INGEST_UNAVAILABLE error that tells the client when to retry.
func Unavailable(message string, retryAfterSeconds int) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Code: IngestUnavailable, Message: message, RetryAfter: retryAfterSeconds}
}

// TooManyRequests returns a 429 RATE_LIMITED error that tells the client when to send again.
func TooManyRequests(message string, retryAfterSeconds int) *Error {
	return &Error{Status: http.StatusTooManyRequests, Code: RateLimited, Message: message, RetryAfter: retryAfterSeconds}
}

// SafeField reports whether f may be sent back to a client: at most 100 bytes of letters, digits and . _ : - [ ].
func SafeField(f string) bool {
	if len(f) > maxField {
		return false
	}
	for i := 0; i < len(f); i++ {
		c := f[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == ':' || c == '-' || c == '[' || c == ']') {
			return false
		}
	}
	return true
}

// Response turns any error into a status and body. A context deadline (go-zero's timeout middleware hands
// over ctx.Err()) becomes a 503 TIMEOUT with Retry-After; a cancelled request context, which net/http causes
// when reading the request fails (a body slower than the server's read timeout) or the client leaves, becomes
// a 408 TIMEOUT; other errors that are not *Error become a 500 whose message says nothing about the cause,
// because the cause may quote input.
func Response(err error) (int, *Error) {
	if errors.Is(err, context.DeadlineExceeded) {
		return http.StatusServiceUnavailable, &Error{Status: http.StatusServiceUnavailable, Code: Timeout,
			Message: "the request took too long; send it again later", RetryAfter: 1}
	}
	if errors.Is(err, context.Canceled) {
		return http.StatusRequestTimeout, &Error{Status: http.StatusRequestTimeout, Code: Timeout,
			Message: "the request was not received in time; send it again"}
	}
	var e *Error
	if errors.As(err, &e) {
		status := e.Status
		if status == 0 {
			status = http.StatusBadRequest
		}
		return status, e
	}
	return http.StatusInternalServerError, &Error{Status: http.StatusInternalServerError, Code: Internal, Message: "internal error"}
}

// Write writes err as a JSON error response.
func Write(_ context.Context, w http.ResponseWriter, err error) {
	status, body := Response(err)
	if body.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(body.RetryAfter))
	}
	// Written with encoding/json rather than go-zero's httpx, so that this package (and report, which uses
	// it) does not pull go-zero's process-wide signal handlers into every program that imports it.
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// Handler is an error handler for go-zero's httpx.SetErrorHandlerCtx. go-zero's default handler writes err.Error()
// as plain text, and its parse errors quote the raw body; this one never does. The body is an Error value, not
// the *Error: go-zero writes a body that implements error as plain text with http.Error, and JSON otherwise.
func Handler(_ context.Context, err error) (int, any) {
	status, body := Response(err)
	return status, *body
}
