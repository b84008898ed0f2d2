package handler_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/status"
	"github.com/epro-intake/epro-api/internal/types"
)

func TestSubmitBatchMixed(t *testing.T) {
	a := newAPI(t, apiOptions{partitions: 3})
	const secret = "QUAGGA-1180-PRIVATE"
	// A batch is one patient's (PAT-1's token); a report of another patient is refused on its own.
	good1 := validReport("PAT-1")
	good2 := validReport("PAT-1")
	good2["requestId"] = strings.ToUpper(good2["requestId"].(string))
	badID := validReport("PAT-1")
	badID["requestId"] = secret
	old := validReport("PAT-1")
	old["submittedAt"] = time.Now().Add(-100 * 24 * time.Hour).Format(time.RFC3339)
	unknown := validReport("PAT-1")
	unknown["note"] = secret
	dup := validReport("PAT-1")
	dup["requestId"] = good1["requestId"]
	dup["deviceId"] = "device-2" // other content under good1's request id
	big := validReport("PAT-1")
	big["answers"] = map[string]any{"x": strings.Repeat(secret, 5000)}
	other := validReport("PAT-2")

	items := []json.RawMessage{
		mustJSON(t, good1),
		mustJSON(t, badID),
		json.RawMessage(`{"requestId": "` + secret + `"}`),
		mustJSON(t, old),
		mustJSON(t, good2),
		mustJSON(t, unknown),
		json.RawMessage(`"` + secret + `"`),
		mustJSON(t, dup),
		mustJSON(t, big),
		// One item's defects sink that item only.
		json.RawMessage(`{"requestId":"x","requestId":"y"}`),
		json.RawMessage("{\"answers\":\"\xff\"}"),
		json.RawMessage(`{"answers":{"note":"\udc00"}}`),
		mustJSON(t, other),
	}
	resp := a.post("/v1/reports/batch", "application/json", mustJSON(t, map[string]any{"reports": items}))
	if resp.status != http.StatusOK {
		t.Fatalf("status %d body %s", resp.status, resp.body)
	}
	if bytes.Contains(resp.body, []byte(secret)) {
		t.Errorf("response echoes request content: %s", resp.body)
	}
	var got types.BatchResp
	if err := json.Unmarshal(resp.body, &got); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		status, code, field, requestID string
	}{
		{"accepted", "", "", good1["requestId"].(string)},
		{"rejected", errcode.InvalidRequestID, "requestId", ""},
		{"rejected", errcode.InvalidRequestID, "requestId", ""},
		{"rejected", errcode.SubmittedAtOutOfRange, "submittedAt", old["requestId"].(string)},
		{"accepted", "", "", strings.ToLower(good2["requestId"].(string))},
		{"rejected", errcode.ValidationFailed, "", ""}, // an unknown key is not echoed
		{"rejected", errcode.InvalidJSON, "", ""},
		// good1's request id for a report with other answers: a conflict, never a silent drop.
		{"conflict", errcode.RequestIDConflict, "requestId", good1["requestId"].(string)},
		{"rejected", errcode.PayloadTooLarge, "", ""},
		{"rejected", errcode.InvalidJSON, "requestId", ""},
		{"rejected", errcode.InvalidJSON, "", ""},
		{"rejected", errcode.InvalidJSON, "answers", ""},
		{"rejected", errcode.PatientMismatch, "patientId", other["requestId"].(string)},
	}
	if len(got.Results) != len(want) || got.Accepted != 2 || got.Rejected != 10 || got.Conflict != 1 || got.Duplicate != 0 || got.Unavailable != 0 {
		t.Fatalf("got %d results, accepted %d rejected %d conflict %d duplicate %d unavailable %d", len(got.Results),
			got.Accepted, got.Rejected, got.Conflict, got.Duplicate, got.Unavailable)
	}
	for i, w := range want {
		r := got.Results[i]
		if r.Index != i || r.Status != w.status || r.RequestID != w.requestID {
			t.Errorf("results[%d] = %+v, want %+v", i, r, w)
			continue
		}
		if w.status == "accepted" {
			if r.Error != nil || r.ReceivedAt == "" {
				t.Errorf("results[%d] = %+v", i, r)
			}
			continue
		}
		if r.Error == nil || r.Error.Code != w.code || r.Error.Field != w.field || r.Error.Message == "" || r.ReceivedAt != "" {
			t.Errorf("results[%d] = %+v (error %+v), want %+v", i, r, r.Error, w)
		}
	}

	// Exactly the two accepted reports are on the topic, in order on their patient's partition.
	if n := a.recordCount(); n != 2 {
		t.Fatalf("topic holds %d records, want 2", n)
	}
	for i, m := range a.readMessages(javaPartition("PAT-1", 3), 2, 5*time.Second) {
		env, err := report.ParseEnvelope(m.Value)
		if err != nil {
			t.Fatal(err)
		}
		if env.PatientID != "PAT-1" || env.RequestID != got.Results[[]int{0, 4}[i]].RequestID {
			t.Errorf("record %d on PAT-1's partition: %s of %s", i, env.RequestID, env.PatientID)
		}
	}
	for _, i := range []int{0, 4} {
		if v := cachedStatus(t, a.rdb, got.Results[i].RequestID); v != status.Accepted {
			t.Errorf("status of results[%d] = %q", i, v)
		}
	}
}

func TestSubmitBatchAllRejectedIs200(t *testing.T) {
	a := newAPI(t, apiOptions{})
	bad := validReport("PAT-1")
	delete(bad, "answers")
	resp := a.post("/v1/reports/batch", "application/json", mustJSON(t, map[string]any{"reports": []any{bad}}))
	if resp.status != http.StatusOK {
		t.Fatalf("status %d body %s", resp.status, resp.body)
	}
	var got types.BatchResp
	if err := json.Unmarshal(resp.body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Accepted != 0 || got.Rejected != 1 || got.Results[0].Error.Field != "answers" {
		t.Errorf("%s", resp.body)
	}
}

func TestSubmitBatchKafkaUnreachableIs503(t *testing.T) {
	a := newAPI(t, apiOptions{brokers: []string{closedAddr(t)}, extraYAML: "ProduceTimeout: 500ms\n"})
	bad := validReport("PAT-1")
	bad["patientId"] = ""
	body := mustJSON(t, map[string]any{"reports": []any{validReport("PAT-1"), bad, validReport("PAT-2")}})
	resp := a.post("/v1/reports/batch", "application/json", body)
	if resp.status != http.StatusServiceUnavailable || resp.header.Get("Retry-After") == "" {
		t.Fatalf("status %d Retry-After %q body %s", resp.status, resp.header.Get("Retry-After"), resp.body)
	}
	if e := resp.errorBody(t); e.Code != errcode.IngestUnavailable {
		t.Errorf("code %s", e.Code)
	}
}

func TestSubmitBatchRequestErrors(t *testing.T) {
	a := newAPI(t, apiOptions{})
	many := make([]any, 101)
	for i := range many {
		many[i] = validReport("PAT-1")
	}
	huge := make([]any, 40)
	for i := range huge {
		r := validReport("PAT-1")
		r["answers"] = map[string]any{"x": strings.Repeat("y", 60<<10)}
		huge[i] = r
	}
	cases := []struct {
		name, contentType string
		body              []byte
		status            int
		code, field       string
	}{
		{"too many", "application/json", mustJSON(t, map[string]any{"reports": many}), 400, errcode.ValidationFailed, "reports"},
		{"too large", "application/json", mustJSON(t, map[string]any{"reports": huge}), 413, errcode.PayloadTooLarge, ""},
		{"empty", "application/json", []byte(`{"reports":[]}`), 400, errcode.ValidationFailed, "reports"},
		{"missing", "application/json", []byte(`{}`), 400, errcode.ValidationFailed, "reports"},
		{"not an array", "application/json", []byte(`{"reports":{}}`), 400, errcode.ValidationFailed, "reports"},
		{"unknown member", "application/json", []byte(`{"reports":[],"x":1}`), 400, errcode.ValidationFailed, ""},
		{"trailing", "application/json", []byte(`{"reports":[]}]`), 400, errcode.InvalidJSON, ""},
		// The batch document is checked as a whole first: a duplicate key in any item makes it malformed.
		{"content type", "text/json", []byte(`{"reports":[]}`), 415, errcode.UnsupportedMediaType, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := a.post("/v1/reports/batch", tc.contentType, tc.body)
			if resp.status != tc.status {
				t.Fatalf("status %d, want %d; body %.300s", resp.status, tc.status, resp.body)
			}
			if e := resp.errorBody(t); e.Code != tc.code || e.Field != tc.field {
				t.Errorf("error %+v, want %s %q", e, tc.code, tc.field)
			}
		})
	}
	if n := a.recordCount(); n != 0 {
		t.Errorf("%d records on the topic", n)
	}
}

// failingProducer fails the messages whose request id is in fail, as a broker that lost the leader of their
// partition would, and sends the rest to Kafka. Like kafka-go it reports per-message outcomes as
// kafka.WriteErrors.
type failingProducer struct {
	svcProducer
	fail map[string]bool
}

func (p *failingProducer) Send(ctx context.Context, msgs ...kafka.Message) error {
	werrs := make(kafka.WriteErrors, len(msgs))
	var ok []kafka.Message
	for i, m := range msgs {
		if id, _ := header(m, report.HeaderRequestID); p.fail[id] {
			werrs[i] = kafka.LeaderNotAvailable
		} else {
			ok = append(ok, m)
		}
	}
	if len(ok) == len(msgs) {
		return p.svcProducer.Send(ctx, msgs...)
	}
	if len(ok) > 0 {
		if err := p.svcProducer.Send(ctx, ok...); err != nil {
			return err
		}
	}
	return fmt.Errorf("produce %d of %d messages: %w", werrs.Count(), len(msgs), werrs)
}

func TestSubmitBatchPartialKafkaFailure(t *testing.T) {
	// One patient's batch, as every batch is: reports[1], reports[3] and down fail in Kafka.
	reports := []map[string]any{validReport("PAT-UP"), validReport("PAT-UP"), validReport("PAT-UP"), validReport("PAT-UP")}
	down := validReport("PAT-UP")
	fail := map[string]bool{}
	for _, r := range []map[string]any{reports[1], reports[3], down} {
		fail[r["requestId"].(string)] = true
	}
	a := newAPI(t, apiOptions{producer: func(p svcProducer) svcProducer {
		return &failingProducer{svcProducer: p, fail: fail}
	}})
	bad := validReport("PAT-UP")
	bad["locale"] = "de DE"
	items := []any{reports[0], reports[1], bad, reports[2], reports[3]}

	resp := a.post("/v1/reports/batch", "application/json", mustJSON(t, map[string]any{"reports": items}))
	if resp.status != http.StatusOK {
		t.Fatalf("status %d body %s", resp.status, resp.body)
	}
	var got types.BatchResp
	if err := json.Unmarshal(resp.body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Accepted != 2 || got.Rejected != 1 || got.Unavailable != 2 {
		t.Fatalf("counts in %s", resp.body)
	}
	wantStatus := []string{"accepted", "unavailable", "rejected", "accepted", "unavailable"}
	for i, w := range wantStatus {
		r := got.Results[i]
		if r.Status != w {
			t.Errorf("results[%d].status = %s, want %s", i, r.Status, w)
		}
		if w == "unavailable" && (r.Error == nil || r.Error.Code != errcode.IngestUnavailable || r.ReceivedAt != "" || r.RequestID == "") {
			t.Errorf("results[%d] = %+v", i, r)
		}
	}
	// Only what Kafka took is on the topic and cached as accepted.
	msgs := a.readMessages(0, 2, 5*time.Second)
	for i, m := range msgs {
		if id, _ := header(m, report.HeaderRequestID); id != []map[string]any{reports[0], reports[2]}[i]["requestId"] {
			t.Errorf("record %d on the topic is %s", i, id)
		}
	}
	if n := a.recordCount(); n != 2 {
		t.Errorf("%d records", n)
	}
	for i, r := range got.Results {
		v := ""
		if r.Status == "accepted" {
			v = cachedStatus(t, a.rdb, r.RequestID)
		} else if r.RequestID != "" {
			v = a.rdb.Get(t.Context(), status.Key(r.RequestID)).Val()
		}
		if (r.Status == "accepted") != (v == status.Accepted) {
			t.Errorf("results[%d] %s: status cached = %q", i, r.Status, v)
		}
	}

	// When Kafka takes none of the valid items, the whole batch is a 503.
	resp = a.post("/v1/reports/batch", "application/json", mustJSON(t, map[string]any{"reports": []any{down, bad}}))
	if resp.status != http.StatusServiceUnavailable || resp.header.Get("Retry-After") == "" {
		t.Fatalf("status %d Retry-After %q body %s", resp.status, resp.header.Get("Retry-After"), resp.body)
	}
}
