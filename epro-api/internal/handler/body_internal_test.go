package handler

import (
	"testing"
)

func TestCheckContentType(t *testing.T) {
	for _, tc := range []struct {
		v  string
		ok bool
	}{
		{"application/json", true},
		{"application/json; charset=utf-8", true},
		{"Application/JSON; Charset=UTF-8", true},
		{"application/json;charset=\"utf-8\"", true},
		{"", false},
		{"application/json; charset=latin1", false},
		{"application/json; boundary=x", false},
		{"application/json; charset=utf-8; x=y", false},
		{"application/jsonx", false},
		{"application/problem+json", false},
		{"text/json", false},
		{"text/plain", false},
		{"multipart/form-data; boundary=x", false},
		{"application/json; charset", false},
	} {
		err := checkContentType(tc.v)
		if (err == nil) != tc.ok {
			t.Errorf("checkContentType(%q) = %v, want ok=%v", tc.v, err, tc.ok)
		}
	}
}
