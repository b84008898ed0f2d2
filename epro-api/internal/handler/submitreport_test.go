package handler_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/status"
	"github.com/epro-intake/epro-api/internal/types"
)

func header(m kafka.Message, key string) (string, bool) {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

func TestSubmitReportProducesBeforeAccepting(t *testing.T) {
	a := newAPI(t, apiOptions{})
	rep := validReport("PAT-0001")
	// Upper case: the API canonicalises it. A fresh id, so that a real Redis reused across runs knows none.
	wantID := uuid.NewString()
	rep["requestId"] = strings.ToUpper(wantID)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	sent := mustJSON(t, rep)
	req, _ := http.NewRequest(http.MethodPost, a.url+"/v1/reports", bytes.NewReader(sent))
	req.Header.Set("Content-Type", "application/json; charset=UTF-8")
	req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	req.Header.Set("tracestate", "vendor=abc")

	before := time.Now().UTC()
	resp := a.do(a.authorize(req, "PAT-0001"))
	if resp.status != http.StatusAccepted {
		t.Fatalf("status %d, body %s", resp.status, resp.body)
	}
	var got types.AcceptedResp
	if err := json.Unmarshal(resp.body, &got); err != nil {
		t.Fatal(err)
	}
	sentSum := sha256.Sum256(sent)
	if got.RequestID != wantID || got.Status != "accepted" || got.SubmissionSHA256 != hex.EncodeToString(sentSum[:]) {
		t.Fatalf("response %+v", got)
	}
	receivedAt, err := time.Parse(time.RFC3339Nano, got.ReceivedAt)
	if err != nil || receivedAt.Before(before) || receivedAt.After(time.Now()) || receivedAt.Location() != time.UTC {
		t.Fatalf("receivedAt %q: %v", got.ReceivedAt, err)
	}

	// The 202 came after the broker acknowledged the record, so it is readable now.
	msgs := a.readMessages(0, 1, 5*time.Second)
	m := msgs[0]
	if string(m.Key) != "PAT-0001" {
		t.Errorf("key %q", m.Key)
	}
	if v, _ := header(m, report.HeaderRequestID); v != wantID {
		t.Errorf("x-request-id %q", v)
	}
	if v, _ := header(m, report.HeaderSchemaVersion); v != strconv.Itoa(report.SchemaVersion) {
		t.Errorf("x-schema-version %q", v)
	}
	if v, _ := header(m, report.HeaderTraceparent); !strings.HasPrefix(v, "00-"+traceID+"-") {
		t.Errorf("traceparent %q does not continue trace %s", v, traceID)
	}
	if v, _ := header(m, report.HeaderTracestate); v != "vendor=abc" {
		t.Errorf("tracestate %q", v)
	}
	if _, ok := header(m, "baggage"); ok {
		t.Error("baggage header on the record")
	}

	env, err := report.ParseEnvelope(m.Value)
	if err != nil {
		t.Fatalf("envelope does not parse: %v\n%s", err, m.Value)
	}
	if err := env.Validate(); err != nil {
		t.Fatalf("envelope invalid: %v", err)
	}
	if env.RequestID != wantID || env.PatientID != "PAT-0001" || env.TrialID != "TRIAL-7" ||
		env.QuestionnaireID != "eq-5d-5l" || env.QuestionnaireVersion != "2.1" ||
		env.SubmittedAt != rep["submittedAt"] || env.DeviceID != "device-1" || env.AppVersion != "3.4.1" ||
		env.Locale != "de-DE" || env.SchemaVersion != report.SchemaVersion {
		t.Errorf("envelope %+v", env)
	}
	if !env.ReceivedAt.Equal(receivedAt) {
		t.Errorf("envelope receivedAt %s, response %s", env.ReceivedAt, receivedAt)
	}
	if !bytes.Equal(env.Original, sent) {
		t.Errorf("envelope original %q, want the body sent", env.Original)
	}
	var answers map[string]any
	if err := json.Unmarshal(env.Answers, &answers); err != nil || answers["note"] != privateNote || answers["mobility"] != 2.0 {
		t.Errorf("answers %s", env.Answers)
	}

	// Best-effort status cache.
	if v := cachedStatus(t, a.rdb, wantID); v != status.Accepted {
		t.Errorf("redis status %q", v)
	}
	if ttl := a.rdb.TTL(t.Context(), status.Key(wantID)).Val(); ttl <= 0 || ttl > status.TTL {
		t.Errorf("redis TTL %s", ttl)
	}
	// The receipt, cached beside it and written before the status that cachedStatus waited for.
	receipt, err := status.ParseReceipt(a.rdb.Get(t.Context(), status.ReceiptKey(wantID)).Val())
	sub, _ := report.ParseSubmission(sent)
	content, _ := sub.ContentHash()
	if err != nil || receipt.PatientID != "PAT-0001" || !receipt.ReceivedAt.Equal(receivedAt) ||
		receipt.ContentSHA256 != hex.EncodeToString(content[:]) || receipt.SubmissionSHA256 != got.SubmissionSHA256 {
		t.Errorf("redis receipt %+v, %v", receipt, err)
	}
}

// Java's default partitioner: toPositive(murmur2(key)) % partitions. 0xd067cf64 is murmur2("kafka") as Java
// computes it (the vector librdkafka and kafka-go test against).
func TestSubmitReportPartitionsByPatientLikeJava(t *testing.T) {
	const partitions = 12
	const javaMurmur2Kafka uint32 = 0xd067cf64
	want := int(javaMurmur2Kafka&0x7fffffff) % partitions

	ids := make([]int, partitions)
	for i := range ids {
		ids[i] = i
	}
	if got := (&kafka.Murmur2Balancer{Consistent: true}).Balance(kafka.Message{Key: []byte("kafka")}, ids...); got != want {
		t.Fatalf("kafka-go Murmur2Balancer puts key kafka on %d, Java on %d", got, want)
	}

	a := newAPI(t, apiOptions{partitions: partitions})
	for i := 0; i < 3; i++ {
		if resp := a.post("/v1/reports", "application/json", mustJSON(t, validReport("kafka"))); resp.status != http.StatusAccepted {
			t.Fatalf("status %d, body %s", resp.status, resp.body)
		}
	}
	// All three reports of the patient are on Java's partition, and nowhere else.
	msgs := a.readMessages(want, 3, 5*time.Second)
	for _, m := range msgs {
		if string(m.Key) != "kafka" {
			t.Errorf("key %q on partition %d", m.Key, want)
		}
	}
	if n := a.recordCount(); n != 3 {
		t.Errorf("topic holds %d records, want 3", n)
	}
}

func TestSubmitReportKafkaUnreachableIs503(t *testing.T) {
	a := newAPI(t, apiOptions{brokers: []string{closedAddr(t)}, extraYAML: "ProduceTimeout: 1s\n"})
	rep := validReport("PAT-0002")
	start := time.Now()
	resp := a.post("/v1/reports", "application/json", mustJSON(t, rep))
	if resp.status != http.StatusServiceUnavailable {
		t.Fatalf("status %d, body %s", resp.status, resp.body)
	}
	if e := resp.errorBody(t); e.Code != errcode.IngestUnavailable {
		t.Errorf("code %s", e.Code)
	}
	if ra, err := strconv.Atoi(resp.header.Get("Retry-After")); err != nil || ra <= 0 {
		t.Errorf("Retry-After %q", resp.header.Get("Retry-After"))
	}
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Errorf("503 took %s, beyond the produce timeout", d)
	}
	if n, err := a.rdb.Exists(t.Context(), status.Key(rep["requestId"].(string))).Result(); err != nil || n != 0 {
		t.Errorf("status cached for a report Kafka did not take (%d, %v)", n, err)
	}
}

// replicationErrProducer fails every send with err, as kafka-go reports a broker's refusal of an acks=all
// write: per message, in kafka.WriteErrors.
type replicationErrProducer struct {
	svcProducer
	err error
}

func (p *replicationErrProducer) Send(_ context.Context, msgs ...kafka.Message) error {
	werrs := make(kafka.WriteErrors, len(msgs))
	for i := range werrs {
		werrs[i] = p.err
	}
	return fmt.Errorf("produce %d of %d messages: %w", len(msgs), len(msgs), werrs)
}

// On a cluster whose in-sync replicas fell below min.insync.replicas, or whose partition has no leader, an
// acks=all write is refused; the report was not taken, so the answer is 503 INGEST_UNAVAILABLE, never a 2xx,
// and nothing is cached as accepted.
func TestSubmitReportReplicationErrorsAre503(t *testing.T) {
	for _, kerr := range []kafka.Error{
		kafka.NotEnoughReplicas, kafka.NotEnoughReplicasAfterAppend, kafka.LeaderNotAvailable,
		kafka.NotLeaderForPartition, kafka.RequestTimedOut,
	} {
		t.Run(kerr.Title(), func(t *testing.T) {
			a := newAPI(t, apiOptions{producer: func(p svcProducer) svcProducer {
				return &replicationErrProducer{svcProducer: p, err: kerr}
			}})
			rep := validReport("PAT-0005")
			resp := a.post("/v1/reports", "application/json", mustJSON(t, rep))
			if resp.status != http.StatusServiceUnavailable || resp.header.Get("Retry-After") == "" {
				t.Fatalf("status %d, Retry-After %q, body %s", resp.status, resp.header.Get("Retry-After"), resp.body)
			}
			if e := resp.errorBody(t); e.Code != errcode.IngestUnavailable {
				t.Errorf("code %s", e.Code)
			}
			if n, err := a.rdb.Exists(t.Context(), status.Key(rep["requestId"].(string))).Result(); err != nil || n != 0 {
				t.Errorf("status cached for a report Kafka refused (%d, %v)", n, err)
			}
		})
	}
}

// A slow broker: the produce timeout ends the request with our 503, before go-zero's own timeout.
func TestSubmitReportProduceTimeoutIs503(t *testing.T) {
	a := newAPI(t, apiOptions{
		extraYAML: "ProduceTimeout: 300ms\n",
		producer:  func(p svcProducer) svcProducer { return &slowProducer{svcProducer: p, delay: 2 * time.Second} },
	})
	resp := a.post("/v1/reports", "application/json", mustJSON(t, validReport("PAT-0003")))
	if resp.status != http.StatusServiceUnavailable || resp.header.Get("Retry-After") == "" {
		t.Fatalf("status %d, Retry-After %q, body %s", resp.status, resp.header.Get("Retry-After"), resp.body)
	}
	if e := resp.errorBody(t); e.Code != errcode.IngestUnavailable {
		t.Errorf("code %s", e.Code)
	}
}

func TestSubmitReportErrors(t *testing.T) {
	a := newAPI(t, apiOptions{})
	// A distinctive answer: no response may contain it.
	const secret = "ZEBRA-7731-PRIVATE"
	good := func() map[string]any {
		r := validReport("PAT-0004")
		r["answers"] = map[string]any{"free_text": secret}
		return r
	}
	with := func(k string, v any) []byte {
		r := good()
		if v == nil {
			delete(r, k)
		} else {
			r[k] = v
		}
		return mustJSON(t, r)
	}
	goodJSON := mustJSON(t, good())

	cases := []struct {
		name        string
		contentType string
		body        []byte
		chunked     bool
		status      int
		code        string
		field       string
	}{
		{"wrong content type", "text/plain", goodJSON, false, 415, errcode.UnsupportedMediaType, ""},
		{"no content type", "", goodJSON, false, 415, errcode.UnsupportedMediaType, ""},
		{"other charset", "application/json; charset=iso-8859-1", goodJSON, false, 415, errcode.UnsupportedMediaType, ""},
		{"form", "application/x-www-form-urlencoded", goodJSON, false, 415, errcode.UnsupportedMediaType, ""},
		{"too large", "application/json", bigReport(t, secret, 70<<10), false, 413, errcode.PayloadTooLarge, ""},
		{"too large chunked", "application/json", bigReport(t, secret, 70<<10), true, 413, errcode.PayloadTooLarge, ""},
		{"empty body", "application/json", nil, false, 400, errcode.InvalidJSON, ""},
		{"syntax", "application/json", []byte(`{"answers": {"free_text": "` + secret + `"`), false, 400, errcode.InvalidJSON, ""},
		{"duplicate key", "application/json", []byte(strings.Replace(string(goodJSON), `"answers":`, `"patientId":"PAT-9","answers":`, 1)), false, 400, errcode.InvalidJSON, "patientId"},
		{"duplicate key in answers", "application/json", []byte(strings.Replace(string(goodJSON), `{"free_text"`, `{"free_text":"x","free_text"`, 1)), false, 400, errcode.InvalidJSON, "answers.free_text"},
		{"trailing garbage", "application/json", append(append([]byte{}, goodJSON...), []byte(` {"x":"`+secret+`"}`)...), false, 400, errcode.InvalidJSON, ""},
		{"invalid utf-8", "application/json", []byte(strings.Replace(string(goodJSON), secret, secret+"\xff\xfe", 1)), false, 400, errcode.InvalidJSON, ""},
		{"not an object", "application/json", []byte(`["` + secret + `"]`), false, 400, errcode.InvalidJSON, ""},
		{"unknown field", "application/json", with("mood", secret), false, 400, errcode.ValidationFailed, ""},
		{"unknown field named like patient text", "application/json", with("my pain is 7", 1), false, 400, errcode.ValidationFailed, ""},
		{"field in other case", "application/json", bytes.Replace(goodJSON, []byte(`"patientId"`), []byte(`"PatientID"`), 1), false, 400, errcode.ValidationFailed, "patientId"},
		{"missing offset", "application/json", with("submittedAt", time.Now().Format("2006-01-02T15:04:05")), false, 400, errcode.ValidationFailed, "submittedAt"},
		{"offset beyond 23:59", "application/json", with("submittedAt", time.Now().Format("2006-01-02T15:04:05")+"+24:00"), false, 400, errcode.ValidationFailed, "submittedAt"},
		{"unpaired surrogate in answers", "application/json", bytes.Replace(goodJSON, []byte(secret), []byte(secret+`\ud800`), 1), false, 400, errcode.InvalidJSON, "answers"},
		{"unpaired surrogate in deviceId", "application/json", bytes.Replace(goodJSON, []byte(`"deviceId":"`), []byte(`"deviceId":"\udc00`), 1), false, 400, errcode.InvalidJSON, "deviceId"},
		{"too old", "application/json", with("submittedAt", time.Now().Add(-91*24*time.Hour).Format(time.RFC3339)), false, 422, errcode.SubmittedAtOutOfRange, "submittedAt"},
		{"in the future", "application/json", with("submittedAt", time.Now().Add(time.Hour).Format(time.RFC3339)), false, 422, errcode.SubmittedAtOutOfRange, "submittedAt"},
		{"bad request id", "application/json", with("requestId", secret), false, 400, errcode.InvalidRequestID, "requestId"},
		{"missing patient", "application/json", with("patientId", nil), false, 400, errcode.ValidationFailed, "patientId"},
		{"patient with spaces", "application/json", with("patientId", "PAT 1"), false, 400, errcode.ValidationFailed, "patientId"},
		{"empty answers", "application/json", with("answers", map[string]any{}), false, 400, errcode.ValidationFailed, "answers"},
		{"answers not an object", "application/json", with("answers", []string{secret}), false, 400, errcode.ValidationFailed, "answers"},
		{"number as string field", "application/json", with("trialId", 7), false, 400, errcode.ValidationFailed, "trialId"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = bytes.NewReader(tc.body)
			if tc.chunked {
				// Not a *bytes.Reader: net/http cannot know the length and sends the body chunked.
				body = io.MultiReader(bytes.NewReader(tc.body))
			}
			req, _ := http.NewRequest(http.MethodPost, a.url+"/v1/reports", body)
			if tc.chunked && req.ContentLength != 0 {
				t.Fatal("request would carry a Content-Length")
			}
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			resp := a.do(a.authorize(req, patientOf(tc.body)))
			if resp.status != tc.status {
				t.Fatalf("status %d, want %d; body %s", resp.status, tc.status, resp.body)
			}
			e := resp.errorBody(t)
			if e.Code != tc.code || e.Field != tc.field || e.Message == "" {
				t.Errorf("error %+v, want code %s field %q", e, tc.code, tc.field)
			}
			if bytes.Contains(resp.body, []byte(secret)) {
				t.Errorf("response echoes request content: %s", resp.body)
			}
		})
	}
	if n := a.recordCount(); n != 0 {
		t.Errorf("rejected requests left %d records on the topic", n)
	}
	if strings.Contains(logs.String(), secret) {
		t.Error("the log contains report content")
	}
	// And the same report, well-formed, is taken.
	if resp := a.post("/v1/reports", "application/json; charset=utf-8", goodJSON); resp.status != http.StatusAccepted {
		t.Fatalf("valid report: status %d, body %s", resp.status, resp.body)
	}
}

// go-zero's Gunzip middleware answers a body that is not gzip with a bare 400; the handlers decode gzip
// themselves, answer with the suite's error body, and apply the size limit to the decoded body.
func TestSubmitReportContentEncoding(t *testing.T) {
	a := newAPI(t, apiOptions{})
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(b)
		_ = zw.Close()
		return buf.Bytes()
	}
	good := mustJSON(t, validReport("PAT-0006"))
	bomb := gz(bigReport(t, "x", 200<<10)) // a few hundred bytes that decode past the 64 KiB limit
	truncated := gz(good)
	truncated = truncated[:len(truncated)-12]
	for _, tc := range []struct {
		name, encoding string
		body           []byte
		status         int
		code           string
	}{
		{"gzip", "gzip", gz(good), http.StatusAccepted, ""},
		{"not gzip", "gzip", good, http.StatusBadRequest, errcode.InvalidJSON},
		{"truncated gzip", "gzip", truncated, http.StatusBadRequest, errcode.InvalidJSON},
		{"gzip bomb", "gzip", bomb, http.StatusRequestEntityTooLarge, errcode.PayloadTooLarge},
		{"other encoding", "br", good, http.StatusUnsupportedMediaType, errcode.UnsupportedMediaType},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, a.url+"/v1/reports", bytes.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Content-Encoding", tc.encoding)
			resp := a.do(a.authorize(req, "PAT-0006"))
			if resp.status != tc.status {
				t.Fatalf("status %d, want %d; body %s", resp.status, tc.status, resp.body)
			}
			if tc.code != "" {
				if e := resp.errorBody(t); e.Code != tc.code || e.Message == "" {
					t.Errorf("error %+v, want code %s", e, tc.code)
				}
			}
		})
	}
	if n := a.recordCount(); n != 1 {
		t.Errorf("%d records on the topic; want 1, the gzip report", n)
	}
}

// bigReport is a valid report of at least size bytes.
func bigReport(t *testing.T, secret string, size int) []byte {
	r := validReport("PAT-0005")
	r["answers"] = map[string]any{"free_text": secret + strings.Repeat("a", size)}
	return mustJSON(t, r)
}

// A failing request must not put the body into the log: go-zero's own log middleware dumps the body of every
// 5xx, which is why it is off.
func TestFailedRequestsDoNotLogContent(t *testing.T) {
	a := newAPI(t, apiOptions{brokers: []string{closedAddr(t)}, extraYAML: "ProduceTimeout: 500ms\n"})
	const secret = "OKAPI-5519-PRIVATE"
	r := validReport("PAT-0006")
	r["answers"] = map[string]any{"free_text": secret}
	resp := a.post("/v1/reports", "application/json", mustJSON(t, r))
	if resp.status != http.StatusServiceUnavailable {
		t.Fatalf("status %d", resp.status)
	}
	batch := mustJSON(t, map[string]any{"reports": []any{r}})
	if resp := a.post("/v1/reports/batch", "application/json", batch); resp.status != http.StatusServiceUnavailable {
		t.Fatalf("batch status %d", resp.status)
	}
	if bytes.Contains(resp.body, []byte(secret)) {
		t.Errorf("response echoes content: %s", resp.body)
	}
	out := logs.String()
	if strings.Contains(out, secret) {
		t.Fatal("the log contains report content")
	}
	// The failure was logged, by request id.
	if !strings.Contains(out, r["requestId"].(string)) {
		t.Error("the log does not name the failed request id")
	}
}

func TestHealthAndReadiness(t *testing.T) {
	t.Run("kafka up", func(t *testing.T) {
		a := newAPI(t, apiOptions{})
		if resp := a.get("/healthz"); resp.status != http.StatusOK {
			t.Fatalf("healthz %d", resp.status)
		}
		waitFor(t, 10*time.Second, "readyz 200", func() bool { return a.get("/readyz").status == http.StatusOK })
	})
	t.Run("kafka down", func(t *testing.T) {
		a := newAPI(t, apiOptions{brokers: []string{closedAddr(t)}})
		if resp := a.get("/healthz"); resp.status != http.StatusOK {
			t.Fatalf("healthz %d", resp.status)
		}
		// Several check intervals pass; readiness never turns on.
		for i := 0; i < 5; i++ {
			resp := a.get("/readyz")
			if resp.status != http.StatusServiceUnavailable || resp.header.Get("Retry-After") == "" {
				t.Fatalf("readyz %d, Retry-After %q", resp.status, resp.header.Get("Retry-After"))
			}
			if e := resp.errorBody(t); e.Code != errcode.IngestUnavailable {
				t.Fatalf("code %s", e.Code)
			}
			time.Sleep(150 * time.Millisecond)
		}
	})
	t.Run("topic missing", func(t *testing.T) {
		brokers := []string{}
		a := newAPI(t, apiOptions{brokers: append(brokers, realBrokers(t)...)}) // no topic created
		time.Sleep(300 * time.Millisecond)
		if resp := a.get("/readyz"); resp.status != http.StatusServiceUnavailable {
			t.Fatalf("readyz %d for a missing topic", resp.status)
		}
	})
}

func TestUnknownRouteAndMethod(t *testing.T) {
	a := newAPI(t, apiOptions{})
	resp := a.get("/v2/nothing")
	if resp.status != http.StatusNotFound || resp.errorBody(t).Code != errcode.NotFound {
		t.Fatalf("unknown path: %d %s", resp.status, resp.body)
	}
	req, _ := http.NewRequest(http.MethodDelete, a.url+"/v1/reports", nil)
	resp = a.do(req)
	if resp.status != http.StatusMethodNotAllowed {
		t.Fatalf("DELETE: %d %s", resp.status, resp.body)
	}
	resp.errorBody(t)
}
