package apierr_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/epro-intake/common/errcode"

	"github.com/epro-intake/epro-api/internal/apierr"
)

func TestSanitize(t *testing.T) {
	for _, tc := range []struct {
		field, want string
	}{
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
		in := errcode.Field(errcode.ValidationFailed, tc.field, "unknown field")
		var out *errcode.Error
		if !errors.As(apierr.Sanitize(in), &out) {
			t.Fatalf("Sanitize lost the errcode.Error")
		}
		if out.Field != tc.want || out.Code != in.Code || out.Message != in.Message || out.Status != in.Status {
			t.Errorf("Sanitize(field %q) = %+v", tc.field, out)
		}
		if in.Field != tc.field {
			t.Errorf("Sanitize changed its argument")
		}
		if item := apierr.Item(in); item.Field != tc.want || item.Code != errcode.ValidationFailed {
			t.Errorf("Item(field %q) = %+v", tc.field, item)
		}
	}
	plain := errors.New("boom")
	if apierr.Sanitize(plain) != plain {
		t.Error("a plain error changed")
	}
}

func TestWrite(t *testing.T) {
	w := httptest.NewRecorder()
	apierr.Write(t.Context(), w, errcode.Unavailable("later", 7))
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "7" {
		t.Fatalf("%d %v", w.Code, w.Header())
	}
	w = httptest.NewRecorder()
	apierr.Write(t.Context(), w, errcode.Field(errcode.ValidationFailed, "free text here", "unknown field"))
	if w.Code != http.StatusBadRequest || strings.Contains(w.Body.String(), "free text") {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
}
