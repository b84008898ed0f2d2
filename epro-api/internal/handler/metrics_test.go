package handler_test

import (
	"bytes"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/epro-api/internal/metrics"
)

// TestMetricsAfterEachKindOfAnswer sends requests answered 202, 200, 400, 401, 403, 404, 409 and 429, a batch
// with a refused item, and a status lookup, then scrapes /metrics as Prometheus would: every family has its
// documented labels, every label value is from a closed set, the counts are the requests', and nothing a
// client sent (request ids, patient ids, answers, tokens) is in the scrape.
func TestMetricsAfterEachKindOfAnswer(t *testing.T) {
	a := newAPI(t, apiOptions{extraYAML: countingYAML, rateLimitYAML: "  PatientBurst: 100\n  PatientRate: 1\n  RedisTimeout: 1s\n"})
	var sent []string // every request id and patient id sent, none of which may appear in the scrape
	suffix := uuid.NewString()[:8]
	p1, p2, p3 := "PAT-M1-"+suffix, "PAT-M2-"+suffix, "PAT-M3-"+suffix
	sent = append(sent, p1, p2, p3)

	one := validReport(p1)
	sent = append(sent, one["requestId"].(string))
	body := mustJSON(t, one)
	expectStatus(t, a.post("/v1/reports", "application/json", body), http.StatusAccepted)
	waitReceipt(t, a, one["requestId"].(string))
	expectStatus(t, a.post("/v1/reports", "application/json", body), http.StatusOK) // a retry: duplicate
	one["deviceId"] = "device-2"                                                    // other content, same id
	expectStatus(t, a.post("/v1/reports", "application/json", mustJSON(t, one)), http.StatusConflict)
	expectStatus(t, a.post("/v1/reports", "application/json", []byte(`{"requestId":`)), http.StatusBadRequest)
	expectStatus(t, a.send("/v1/reports", "", body), http.StatusUnauthorized)
	expectStatus(t, a.postAs(p2, "/v1/reports", "application/json", mustJSON(t, validReport(p1))), http.StatusForbidden)
	expectStatus(t, a.getAs(p1, "/v1/reports/"+one["requestId"].(string)), http.StatusOK)
	expectStatus(t, a.get("/v2/"+p1), http.StatusNotFound)

	// p2's 100 reports empty its bucket; its next report is refused, unless a token came back in the second
	// it refills one (a slow run): then the next.
	full := batchOf(t, 100, p2)
	if n := batchAccepted(t, a.post("/v1/reports/batch", "application/json", full)); n != 100 {
		t.Fatalf("batch: %d accepted", n)
	}
	refilled := 0
	for {
		resp := a.post("/v1/reports", "application/json", mustJSON(t, validReport(p2)))
		if resp.status == http.StatusTooManyRequests {
			break
		}
		expectStatus(t, resp, http.StatusAccepted)
		if refilled++; refilled > 5 {
			t.Fatal("the patient's bucket does not run out")
		}
	}
	accepted := float64(1 + 100 + refilled + 1) // the report, the batch, the refilled ones, the mixed batch's

	// A batch of p3 with one valid report and one without its answers: one accepted, one item refused.
	bad := validReport(p3)
	delete(bad, "answers")
	good := validReport(p3)
	sent = append(sent, bad["requestId"].(string), good["requestId"].(string))
	mixed := mustJSON(t, map[string]any{"reports": []any{good, bad}})
	if n := batchAccepted(t, a.post("/v1/reports/batch", "application/json", mixed)); n != 1 {
		t.Fatalf("mixed batch: %d accepted", n)
	}

	scrape := a.do(mustRequest(t, http.MethodGet, a.url+"/metrics"))
	if scrape.status != http.StatusOK {
		t.Fatalf("/metrics: %d %s", scrape.status, scrape.body)
	}
	for _, s := range append(sent, privateNote, "device-2", "Bearer") {
		if bytes.Contains(scrape.body, []byte(s)) {
			t.Errorf("the scrape contains %q, which a client sent", s)
		}
	}
	if tok, _ := sentTokens.foundIn(string(scrape.body)); tok != "" {
		t.Error("the scrape contains a bearer token")
	}
	var parser expfmt.TextParser
	families, err := parser.TextToMetricFamilies(bytes.NewReader(scrape.body))
	if err != nil {
		t.Fatalf("parse the scrape: %v", err)
	}

	// Each family of ours, with its type and its label names; nothing else of ours is exposed.
	want := map[string]struct {
		typ    dto.MetricType
		labels []string
	}{
		"epro_api_http_requests_total":        {dto.MetricType_COUNTER, []string{"code", "route"}},
		"epro_api_http_requests_in_flight":    {dto.MetricType_GAUGE, nil},
		"epro_api_rejections_total":           {dto.MetricType_COUNTER, []string{"code"}},
		"epro_api_rate_limited_reports_total": {dto.MetricType_COUNTER, nil},
		"epro_api_reports_total":              {dto.MetricType_COUNTER, []string{"outcome"}},
		"epro_api_produce_duration_seconds":   {dto.MetricType_HISTOGRAM, []string{"outcome"}},
		"epro_api_upload_delay_seconds":       {dto.MetricType_HISTOGRAM, nil},
	}
	allowed := map[string][]string{
		"route": metrics.Routes, "code": append(slices.Clone(metrics.Codes), statusCodes()...),
		"outcome": {metrics.OutcomeAccepted, metrics.OutcomeDuplicate, metrics.OutcomeConflict, "ok", "error"},
	}
	for name, mf := range families {
		if !strings.HasPrefix(name, "epro_api_") {
			continue
		}
		w, ok := want[name]
		if !ok {
			t.Errorf("unexpected family %s", name)
			continue
		}
		if mf.GetType() != w.typ {
			t.Errorf("%s is a %s, want %s", name, mf.GetType(), w.typ)
		}
		for _, m := range mf.GetMetric() {
			var names []string
			for _, lp := range m.GetLabel() {
				names = append(names, lp.GetName())
				if !slices.Contains(allowed[lp.GetName()], lp.GetValue()) {
					t.Errorf("%s: label %s=%q is not from its closed set", name, lp.GetName(), lp.GetValue())
				}
			}
			if !slices.Equal(names, w.labels) {
				t.Errorf("%s: labels %v, want %v", name, names, w.labels)
			}
		}
	}
	for name := range want {
		if families[name] == nil {
			t.Errorf("family %s missing", name)
		}
	}
	if families["go_goroutines"] == nil || families["process_cpu_seconds_total"] == nil {
		t.Error("the Go and process collectors are missing")
	}

	requests := func(route, code string) float64 {
		return value(families, "epro_api_http_requests_total", map[string]string{"route": route, "code": code})
	}
	for _, c := range []struct {
		route, code string
		want        float64
	}{
		{"/v1/reports", "202", float64(1 + refilled)}, {"/v1/reports", "200", 1}, {"/v1/reports", "409", 1}, {"/v1/reports", "400", 1},
		{"/v1/reports", "401", 1}, {"/v1/reports", "403", 1}, {"/v1/reports", "429", 1},
		{"/v1/reports/batch", "200", 2}, {"/v1/reports/:requestId", "200", 1}, {metrics.RouteOther, "404", 1},
	} {
		if got := requests(c.route, c.code); got != c.want {
			t.Errorf("requests{route=%q,code=%q} = %v, want %v", c.route, c.code, got, c.want)
		}
	}
	for code, want := range map[string]float64{
		errcode.RequestIDConflict: 1, errcode.InvalidJSON: 1, errcode.Unauthorized: 1, errcode.PatientMismatch: 1,
		errcode.RateLimited: 1, errcode.ValidationFailed: 1, errcode.IngestUnavailable: 0,
	} {
		if got := value(families, "epro_api_rejections_total", map[string]string{"code": code}); got != want {
			t.Errorf("rejections{code=%s} = %v, want %v", code, got, want)
		}
	}
	for outcome, want := range map[string]float64{metrics.OutcomeAccepted: accepted, metrics.OutcomeDuplicate: 1, metrics.OutcomeConflict: 1} {
		if got := value(families, "epro_api_reports_total", map[string]string{"outcome": outcome}); got != want {
			t.Errorf("reports{outcome=%s} = %v, want %v", outcome, got, want)
		}
	}
	if got := value(families, "epro_api_rate_limited_reports_total", nil); got != 1 {
		t.Errorf("rate-limited reports %v, want 1", got)
	}
	// The scrape itself is the one request in flight.
	if got := value(families, "epro_api_http_requests_in_flight", nil); got != 1 {
		t.Errorf("in flight %v, want 1", got)
	}
	// A Send for each single report accepted, one for the full batch, one for the mixed batch.
	if h := histogram(families, "epro_api_produce_duration_seconds", map[string]string{"outcome": "ok"}); h.GetSampleCount() != uint64(3+refilled) || h.GetSampleSum() <= 0 {
		t.Errorf("produce ok: %d samples, sum %v", h.GetSampleCount(), h.GetSampleSum())
	}
	if h := histogram(families, "epro_api_produce_duration_seconds", map[string]string{"outcome": "error"}); h.GetSampleCount() != 0 {
		t.Errorf("produce errors: %d", h.GetSampleCount())
	}
	// validReport's submittedAt is an hour old: every accepted report waited an hour and a few seconds at most.
	h := histogram(families, "epro_api_upload_delay_seconds", nil)
	if float64(h.GetSampleCount()) != accepted {
		t.Errorf("upload delay: %d samples, want %v", h.GetSampleCount(), accepted)
	}
	for _, b := range h.GetBucket() {
		le, n := b.GetUpperBound(), b.GetCumulativeCount()
		if le < 3600 && n != 0 || le >= 3*3600 && float64(n) != accepted {
			t.Errorf("upload delay bucket le=%v holds %d", le, n)
		}
	}
	// From a second to 90 days (the longest Limits.MaxAge allows by default), then the parser's +Inf.
	var bounds []float64
	for _, b := range h.GetBucket() {
		bounds = append(bounds, b.GetUpperBound())
	}
	if len(bounds) < 2 || bounds[0] != 1 || bounds[len(bounds)-2] != 90*86400 || !math.IsInf(bounds[len(bounds)-1], 1) {
		t.Errorf("upload delay bounds %v", bounds)
	}
}

// TestMetricsCountGoZeroAnswers: a path no route matches and a wrong method are answered by go-zero's router,
// outside the routes; they are counted all the same.
func TestMetricsCountRouterAnswers(t *testing.T) {
	a := newAPI(t, apiOptions{})
	expectStatus(t, a.do(mustRequest(t, http.MethodDelete, a.url+"/v1/reports")), http.StatusMethodNotAllowed)
	expectStatus(t, a.do(mustRequest(t, http.MethodGet, a.url+"/v1/reports/a/b")), http.StatusNotFound)
	families := scrape(t, a)
	if got := value(families, "epro_api_http_requests_total", map[string]string{"route": "/v1/reports", "code": "405"}); got != 1 {
		t.Errorf("405 counted %v times", got)
	}
	if got := value(families, "epro_api_http_requests_total", map[string]string{"route": metrics.RouteOther, "code": "404"}); got != 1 {
		t.Errorf("404 counted %v times", got)
	}
}

func scrape(t *testing.T, a *api) map[string]*dto.MetricFamily {
	t.Helper()
	resp := a.do(mustRequest(t, http.MethodGet, a.url+"/metrics"))
	if resp.status != http.StatusOK {
		t.Fatalf("/metrics: %d", resp.status)
	}
	var parser expfmt.TextParser
	families, err := parser.TextToMetricFamilies(bytes.NewReader(resp.body))
	if err != nil {
		t.Fatalf("parse the scrape: %v", err)
	}
	return families
}

func mustRequest(t *testing.T, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func expectStatus(t *testing.T, resp response, want int) {
	t.Helper()
	if resp.status != want {
		t.Fatalf("status %d, want %d; body %s", resp.status, want, resp.body)
	}
}

// statusCodes are the HTTP status codes as label values.
func statusCodes() []string {
	var out []string
	for c := 100; c < 600; c++ {
		if http.StatusText(c) != "" {
			out = append(out, strconv.Itoa(c))
		}
	}
	return out
}

// find returns the metric of family name whose labels are exactly labels, or nil.
func find(families map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Metric {
	mf := families[name]
	if mf == nil {
		return nil
	}
	for _, m := range mf.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		match := true
		for _, lp := range m.GetLabel() {
			if labels[lp.GetName()] != lp.GetValue() {
				match = false
			}
		}
		if match {
			return m
		}
	}
	return nil
}

// value is a counter's or gauge's value, 0 when the series does not exist.
func value(families map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	m := find(families, name, labels)
	switch {
	case m == nil:
		return 0
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	default:
		return m.GetGauge().GetValue()
	}
}

func histogram(families map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Histogram {
	if m := find(families, name, labels); m != nil {
		return m.GetHistogram()
	}
	return &dto.Histogram{}
}
