package errcode_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/epro-intake/common/errcode"
)

func TestFieldDropsNamesThatAreNotFieldNames(t *testing.T) {
	for _, tc := range []struct{ field, want string }{
		{"", ""},
		{"submittedAt", "submittedAt"},
		{"answers.q1", "answers.q1"},
		{"reports[3].requestId", "reports[3].requestId"},
		{"answers.my pain is 7", ""},
		{"answers.\"x\"", ""},
		{"<script>", ""},
		{strings.Repeat("a", 101), ""},
		{strings.Repeat("a", 100), strings.Repeat("a", 100)},
	} {
		if got := errcode.Field(errcode.ValidationFailed, tc.field, "unknown field").Field; got != tc.want {
			t.Errorf("Field(%q).Field = %q; want %q", tc.field, got, tc.want)
		}
	}
}

func TestFieldStatus(t *testing.T) {
	if s := errcode.Field(errcode.SubmittedAtOutOfRange, "submittedAt", "x").Status; s != http.StatusUnprocessableEntity {
		t.Errorf("SUBMITTED_AT_OUT_OF_RANGE status %d; want 422", s)
	}
	if s := errcode.Field(errcode.ValidationFailed, "x", "x").Status; s != http.StatusBadRequest {
		t.Errorf("VALIDATION_FAILED status %d; want 400", s)
	}
}

func TestResponse(t *testing.T) {
	wrapped := fmt.Errorf("submit: %w", errcode.Unavailable("later", 7))
	if status, e := errcode.Response(wrapped); status != http.StatusServiceUnavailable || e.Code != errcode.IngestUnavailable {
		t.Errorf("wrapped Unavailable: %d %+v", status, e)
	}
	if status, e := errcode.Response(fmt.Errorf("produce: %w", context.DeadlineExceeded)); status != http.StatusServiceUnavailable ||
		e.Code != errcode.Timeout || e.RetryAfter <= 0 {
		t.Errorf("deadline: %d %+v", status, e)
	}
	status, e := errcode.Response(errors.New(`parse "{\"answers\":\"secret\"}"`))
	if status != http.StatusInternalServerError || e.Code != errcode.Internal || strings.Contains(e.Message, "secret") {
		t.Errorf("plain error leaked or wrong: %d %+v", status, e)
	}
}

func TestWriteSetsRetryAfterAndJSON(t *testing.T) {
	w := httptest.NewRecorder()
	errcode.Write(context.Background(), w, errcode.Unavailable("later", 7))
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "7" {
		t.Fatalf("%d %v", w.Code, w.Header())
	}
	if !strings.Contains(w.Body.String(), `"code":"INGEST_UNAVAILABLE"`) || !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
		t.Fatalf("body %s, content type %s", w.Body, w.Header().Get("Content-Type"))
	}
}

func TestHandler(t *testing.T) {
	status, body := errcode.Handler(context.Background(), errcode.Field(errcode.InvalidJSON, "", "malformed JSON"))
	// go-zero writes a body that implements error as text/plain, so the body must not be one.
	if _, isError := body.(error); isError {
		t.Fatalf("body %#v is an error; go-zero would write it as plain text", body)
	}
	e, ok := body.(errcode.Error)
	if status != http.StatusBadRequest || !ok || e.Code != errcode.InvalidJSON {
		t.Fatalf("%d %#v", status, body)
	}
}

// A request context cancelled by net/http (the request could not be read in time, or the client left) is a
// 408 TIMEOUT, not a 500.
func TestResponseCancelled(t *testing.T) {
	status, body := errcode.Response(fmt.Errorf("read body: %w", context.Canceled))
	if status != http.StatusRequestTimeout || body.Code != errcode.Timeout || body.RetryAfter != 0 {
		t.Fatalf("%d %+v", status, body)
	}
}

func TestTooManyRequests(t *testing.T) {
	w := httptest.NewRecorder()
	errcode.Write(context.Background(), w, errcode.TooManyRequests("slow down", 3))
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "3" {
		t.Fatalf("%d %v", w.Code, w.Header())
	}
	if !strings.Contains(w.Body.String(), `"code":"RATE_LIMITED"`) {
		t.Fatalf("body %s", w.Body)
	}
}
