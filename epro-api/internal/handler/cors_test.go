package handler_test

import (
	"bytes"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/epro-intake/common/errcode"
)

const allowedOrigin = "https://app.example.org"

func (a *api) preflight(origin string) response {
	a.t.Helper()
	req, err := http.NewRequest(http.MethodOptions, a.url+"/v1/reports", nil)
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Origin", origin)
	req.Header.Set("Access-Control-Request-Method", http.MethodPost)
	req.Header.Set("Access-Control-Request-Headers", "authorization,content-encoding,content-type")
	return a.do(req)
}

func (a *api) postFrom(origin, patient string) response {
	a.t.Helper()
	req, err := http.NewRequest(http.MethodPost, a.url+"/v1/reports", bytes.NewReader(mustJSON(a.t, validReport(patient))))
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", origin)
	return a.do(a.authorize(req, patient))
}

// corsHeaders returns the Access-Control-* headers of h.
func corsHeaders(h http.Header) http.Header {
	out := http.Header{}
	for k, v := range h {
		if strings.HasPrefix(k, "Access-Control-") {
			out[k] = v
		}
	}
	return out
}

// listed splits a comma-separated header value.
func listed(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		out = append(out, strings.ToLower(strings.TrimSpace(s)))
	}
	return out
}

// Off by default: no response carries a CORS header, whatever the Origin, and a preflight is just an OPTIONS
// request no route takes.
func TestCORSOffByDefault(t *testing.T) {
	a := newAPI(t, apiOptions{})
	resp := a.preflight(allowedOrigin)
	if h := corsHeaders(resp.header); len(h) != 0 {
		t.Fatalf("preflight with CORS off answered CORS headers %v", h)
	}
	if resp.status != http.StatusMethodNotAllowed || resp.errorBody(t).Code != errcode.MethodNotAllowed {
		t.Fatalf("preflight with CORS off: status %d, body %s", resp.status, resp.body)
	}
	resp = a.postFrom(allowedOrigin, "PAT-CORS")
	if resp.status != http.StatusAccepted {
		t.Fatalf("status %d, body %s", resp.status, resp.body)
	}
	if h := corsHeaders(resp.header); len(h) != 0 || resp.header.Get("Vary") != "" {
		t.Fatalf("POST with CORS off answered CORS headers %v, Vary %q", h, resp.header.Get("Vary"))
	}
}

// With an allow-list, an allowed origin's preflight gets the methods, headers and max age, and its requests
// the origin echoed; any other origin, a subdomain of an allowed one included, gets no CORS header.
func TestCORSAllowList(t *testing.T) {
	a := newAPI(t, apiOptions{extraYAML: "CORS:\n  AllowOrigins: [\"" + allowedOrigin + "\", \"http://localhost:5173\"]\n  MaxAge: 10m\n"})

	resp := a.preflight(allowedOrigin)
	if resp.status != http.StatusNoContent {
		t.Fatalf("allowed preflight: status %d, body %s", resp.status, resp.body)
	}
	h := resp.header
	if got := h.Get("Access-Control-Allow-Origin"); got != allowedOrigin {
		t.Fatalf("Access-Control-Allow-Origin %q, want the origin echoed", got)
	}
	methods := listed(h.Get("Access-Control-Allow-Methods"))
	if !slices.Contains(methods, "post") || !slices.Contains(methods, "get") {
		t.Fatalf("Access-Control-Allow-Methods %q", h.Get("Access-Control-Allow-Methods"))
	}
	headers := listed(h.Get("Access-Control-Allow-Headers"))
	for _, want := range []string{"authorization", "content-type", "content-encoding"} {
		if !slices.Contains(headers, want) {
			t.Fatalf("Access-Control-Allow-Headers %q lacks %s", h.Get("Access-Control-Allow-Headers"), want)
		}
	}
	if got := h.Get("Access-Control-Max-Age"); got != "600" {
		t.Fatalf("Access-Control-Max-Age %q, want 600", got)
	}
	if got := h.Get("Access-Control-Allow-Credentials"); got != "" {
		t.Fatalf("Access-Control-Allow-Credentials %q: the token travels in Authorization, no credentials mode", got)
	}
	if !slices.Contains(h.Values("Vary"), "Origin") {
		t.Fatalf("Vary %v lacks Origin", h.Values("Vary"))
	}

	resp = a.postFrom(allowedOrigin, "PAT-CORS")
	if resp.status != http.StatusAccepted || resp.header.Get("Access-Control-Allow-Origin") != allowedOrigin {
		t.Fatalf("allowed POST: status %d, Access-Control-Allow-Origin %q", resp.status, resp.header.Get("Access-Control-Allow-Origin"))
	}
	if got := listed(resp.header.Get("Access-Control-Expose-Headers")); !slices.Contains(got, "retry-after") {
		t.Fatalf("Access-Control-Expose-Headers %q lacks Retry-After", resp.header.Get("Access-Control-Expose-Headers"))
	}
	if got := a.postFrom("http://localhost:5173", "PAT-CORS").header.Get("Access-Control-Allow-Origin"); got != "http://localhost:5173" {
		t.Fatalf("second allowed origin: Access-Control-Allow-Origin %q", got)
	}

	for _, origin := range []string{"https://evil.example.org", "https://x.app.example.org", "http://app.example.org", "null"} {
		resp := a.preflight(origin)
		if h := corsHeaders(resp.header); len(h) != 0 {
			t.Fatalf("preflight from %s answered CORS headers %v", origin, h)
		}
		if resp.status != http.StatusMethodNotAllowed {
			t.Fatalf("preflight from %s: status %d", origin, resp.status)
		}
		resp = a.postFrom(origin, "PAT-CORS")
		if h := corsHeaders(resp.header); len(h) != 0 {
			t.Fatalf("POST from %s answered CORS headers %v", origin, h)
		}
	}
	// Preflights reach no handler: only the POSTs were produced (2 allowed, 4 from other origins, which a
	// browser would not let the page read but which are not refused).
	if n := a.recordCount(); n != 6 {
		t.Fatalf("%d records, want 6", n)
	}
}
