package middleware_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/zeromicro/go-zero/core/logx"

	"github.com/epro-intake/epro-api/internal/middleware"
)

func TestAccessLog(t *testing.T) {
	var buf bytes.Buffer
	logx.SetWriter(logx.NewWriter(&buf))
	defer logx.Reset()

	const secret = "IBEX-4410-PRIVATE"
	h := middleware.AccessLog(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !bytes.Contains(body, []byte(secret)) {
			t.Error("handler did not get the body")
		}
		middleware.NoteRequestID(r.Context(), "1b4e28ba-2fa1-41d2-883f-0016d3cca427")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"code":"INGEST_UNAVAILABLE"}`))
	})
	body := `{"answers":{"free_text":"` + secret + `"}}`
	// Chunked: no Content-Length, so the size must come from counting.
	req := httptest.NewRequest(http.MethodPost, "/v1/reports?x="+strings.Repeat("q", 300), io.MultiReader(strings.NewReader(body)))
	req.ContentLength = -1
	w := httptest.NewRecorder()
	h(w, req)

	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d", w.Code)
	}
	out := buf.String()
	if strings.Contains(out, secret) || strings.Contains(out, "qqqq") {
		t.Fatalf("log contains request content: %s", out)
	}
	var line map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &line); err != nil {
		t.Fatalf("not one JSON line: %q", out)
	}
	if line["level"] != "error" || line["method"] != "POST" || line["path"] != "/v1/reports" ||
		line["status"] != 503.0 || line["reqBytes"] != float64(len(body)) || line["respBytes"] != 29.0 {
		t.Errorf("log line %v", line)
	}
	if ids, _ := line["requestIds"].([]any); len(ids) != 1 || ids[0] != "1b4e28ba-2fa1-41d2-883f-0016d3cca427" {
		t.Errorf("requestIds %v", line["requestIds"])
	}
}

// A path segment is client input: a malformed request id may be anything the app (or a patient) typed.
func TestAccessLogNeverWritesClientPathSegments(t *testing.T) {
	var buf bytes.Buffer
	logx.SetWriter(logx.NewWriter(&buf))
	defer logx.Reset()
	h := middleware.AccessLog(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadRequest) })
	for path, want := range map[string]string{
		"/v1/reports/my%20pain%20is%207":                   "/v1/reports/:other",
		"/v1/reports/1b4e28ba-2fa1-41d2-883f-0016d3cca427": "/v1/reports/:id",
		"/v1/reports/1B4E28BA-2FA1-41D2-883F-0016D3CCA427": "/v1/reports/:other",
		"/v1/reports/batch":                                "/v1/reports/batch",
		"/IBEX-4410-PRIVATE/a/b/c/d/e/f/g/h":               "/:other/:other/:other/:other/:other/:other/:other/...",
		"/readyz":                                          "/readyz",
	} {
		buf.Reset()
		h(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, path, nil))
		var line map[string]any
		if err := json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &line); err != nil {
			t.Fatalf("%s: not one JSON line: %q", path, buf.String())
		}
		if line["path"] != want {
			t.Errorf("%s logged as %v; want %s", path, line["path"], want)
		}
		if strings.Contains(buf.String(), "pain") || strings.Contains(buf.String(), "IBEX") || strings.Contains(buf.String(), "1B4E") {
			t.Errorf("%s: client text in the log: %s", path, buf.String())
		}
	}
}

func TestNoteRequestIDOutsideAccessLog(t *testing.T) {
	middleware.NoteRequestID(t.Context(), "x") // no entry in the context: a no-op, not a panic
}
