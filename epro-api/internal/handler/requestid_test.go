package handler_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/reportdb/reportdbtest"
	"github.com/epro-intake/common/status"
	"github.com/epro-intake/epro-api/internal/types"
)

// spelled is one report written by hand the way an app might: odd whitespace, <>& unescaped, \u escapes and
// the secret note. respelled is the same report with other key order, whitespace and escapes.
type spelled struct {
	id, patient, submittedAt, mobility string
}

func newSpelled(patient string) spelled {
	return spelled{id: uuid.NewString(), patient: patient, mobility: "2",
		submittedAt: time.Now().Add(-time.Hour).UTC().Truncate(time.Second).Format(time.RFC3339)}
}

func (s spelled) body() []byte {
	return []byte("{\n  \"requestId\" : \"" + s.id + "\",\t\"patientId\":\"" + s.patient + "\", \"trialId\":\"TRIAL-7\"," +
		"\"questionnaireId\":\"eq-5d-5l\",\"questionnaireVersion\":\"2.1\",\"submittedAt\":\"" + s.submittedAt + "\",\r\n" +
		"  \"answers\": { \"mobility\" : " + s.mobility + ", \"note\": \"" + privateNote + " <b>&</b> caf\\u00e9 \\ud83d\\ude00\" } }\n")
}

func (s spelled) respelled() []byte {
	return []byte(`{"answers":{"note":"` + privateNote + ` \u003cb\u003e\u0026\u003c/b\u003e café 😀","mobility":` + s.mobility + `.0},` +
		`"submittedAt":"` + s.submittedAt + `","questionnaireVersion":"2.1","questionnaireId":"eq-5d-5l","trialId":"TRIAL-7",` +
		`"patientId":"` + s.patient + `","requestId":"` + strings.ToUpper(s.id) + `"}`)
}

func sha(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func (a *api) receipt(t *testing.T, r response, code int) types.AcceptedResp {
	t.Helper()
	if r.status != code {
		t.Fatalf("status %d, want %d: %s", r.status, code, r.body)
	}
	var got types.AcceptedResp
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	return got
}

// conflictRefused checks a 409 that produced nothing and echoes nothing of the report.
func (a *api) conflictRefused(t *testing.T, r response, records int64, what string) {
	t.Helper()
	if r.status != http.StatusConflict {
		t.Fatalf("%s: status %d, want 409: %s", what, r.status, r.body)
	}
	if e := r.errorBody(t); e.Code != errcode.RequestIDConflict || e.Field != "requestId" {
		t.Errorf("%s: error %+v", what, e)
	}
	if bytes.Contains(r.body, []byte("PRIVATE")) || bytes.Contains(r.body, []byte("PAT-")) || bytes.Contains(r.body, []byte("mobility")) {
		t.Errorf("%s: the 409 echoes the report: %s", what, r.body)
	}
	if n := a.recordCount(); n != records {
		t.Errorf("%s: the topic holds %d records, want %d: a conflict was produced", what, n, records)
	}
}

// waitReceipt waits for the receipt the API caches after a 202.
func waitReceipt(t *testing.T, a *api, id string) {
	t.Helper()
	waitFor(t, 3*time.Second, "the receipt of "+id, func() bool {
		return a.rdb.Exists(t.Context(), status.ReceiptKey(id)).Val() == 1
	})
}

// receiptsYAML gives the one Redis call before the produce (buckets and receipts) a long budget, for the tests
// that expect a verdict from the receipt cached in Redis: an answer slower than RedisTimeout (a busy host)
// makes the API judge the request as with Redis down, by MySQL, which holds nothing here.
const receiptsYAML = "  RedisTimeout: 1s\n"

// A retry answers 200 with the original receipt and produces nothing; other content, or another patient,
// under the same request id is 409 and produces nothing. The API knows from the receipt cached in Redis.
func TestRequestIDFromTheRedisReceipt(t *testing.T) {
	_, dsn := reportdbtest.Open(t)
	a := newAPI(t, apiOptions{mysqlDSN: dsn, extraYAML: countingYAML, rateLimitYAML: receiptsYAML})
	s := newSpelled("PAT-1")
	first := a.receipt(t, a.post("/v1/reports", "application/json", s.body()), http.StatusAccepted)
	if first.SubmissionSHA256 != sha(s.body()) {
		t.Fatalf("202 submissionSha256 %s, want the sha of the bytes sent %s", first.SubmissionSHA256, sha(s.body()))
	}
	waitReceipt(t, a, s.id)
	records := a.recordCount()
	time.Sleep(5 * time.Millisecond) // a new receivedAt would differ

	for name, body := range map[string][]byte{"same bytes": s.body(), "respelled": s.respelled()} {
		got := a.receipt(t, a.post("/v1/reports", "application/json", body), http.StatusOK)
		want := types.AcceptedResp{RequestID: s.id, Status: "duplicate", ReceivedAt: first.ReceivedAt, SubmissionSHA256: first.SubmissionSHA256}
		if got != want {
			t.Errorf("%s: retry answered %+v, want the original receipt %+v", name, got, want)
		}
	}
	if n := a.recordCount(); n != records {
		t.Fatalf("retries produced: %d records, want %d", n, records)
	}

	changed := s
	changed.mobility = "3"
	a.conflictRefused(t, a.post("/v1/reports", "application/json", changed.body()), records, "changed answer")
	other := s
	other.patient = "PAT-2"
	a.conflictRefused(t, a.post("/v1/reports", "application/json", other.body()), records, "another patient")
}

// The stored row decides where Redis cannot: while Redis is unavailable, and for a receipt cached before
// content hashes. An id Redis answers without a receipt is fresh (a receipt outlives any retry window), so a
// repeat whose receipt is gone is produced again, for epro-mq to store once.
func TestRequestIDFromTheStoredRow(t *testing.T) {
	db, dsn := reportdbtest.Open(t)
	s := newSpelled("PAT-1")
	receivedAt := time.Date(2026, 3, 1, 19, 5, 0, 123456000, time.UTC)
	reportdbtest.Insert(t, db, reportdbtest.Row{Original: s.body(), ReceivedAt: receivedAt})
	changed := s
	changed.mobility = "3"
	other := s
	other.patient = "PAT-2"

	t.Run("redis unavailable", func(t *testing.T) {
		a := newAPI(t, apiOptions{mysqlDSN: dsn, redisAddr: closedAddr(t)})
		records := a.recordCount()
		got := a.receipt(t, a.post("/v1/reports", "application/json", s.respelled()), http.StatusOK)
		want := types.AcceptedResp{RequestID: s.id, Status: "duplicate", ReceivedAt: "2026-03-01T19:05:00.123456Z", SubmissionSHA256: sha(s.body())}
		if got != want {
			t.Errorf("retry answered %+v, want the stored receipt %+v", got, want)
		}
		a.conflictRefused(t, a.post("/v1/reports", "application/json", changed.body()), records, "changed answer")
		a.conflictRefused(t, a.post("/v1/reports", "application/json", other.body()), records, "another patient")
		if n := a.recordCount(); n != records {
			t.Fatalf("%d records, want %d", n, records)
		}
	})

	t.Run("receipt without a content hash", func(t *testing.T) {
		a := newAPI(t, apiOptions{mysqlDSN: dsn, extraYAML: countingYAML, rateLimitYAML: receiptsYAML})
		records := a.recordCount()
		a.rdb.Set(t.Context(), status.ReceiptKey(s.id), status.Receipt{PatientID: "PAT-1", ReceivedAt: receivedAt}.Marshal(), time.Minute)
		a.conflictRefused(t, a.post("/v1/reports", "application/json", changed.body()), records, "changed answer, old receipt")
		a.receipt(t, a.post("/v1/reports", "application/json", s.body()), http.StatusOK)
		if n := a.recordCount(); n != records {
			t.Fatalf("%d records, want %d", n, records)
		}
	})

	t.Run("no receipt in redis", func(t *testing.T) {
		a := newAPI(t, apiOptions{mysqlDSN: dsn, extraYAML: countingYAML, rateLimitYAML: receiptsYAML})
		a.rdb.Del(t.Context(), status.ReceiptKey(s.id))
		records := a.recordCount()
		a.receipt(t, a.post("/v1/reports", "application/json", s.body()), http.StatusAccepted)
		if n := a.recordCount(); n != records+1 {
			t.Fatalf("%d records, want %d: a repeat whose receipt is gone is produced for epro-mq to judge", n, records+1)
		}
	})
}

// The bytes the app sent travel in the envelope unchanged, whatever encoding/json would make of them, and
// the receipt's hash is theirs: for one report the body, for a batch item its bytes as they stood.
func TestOriginalTravelsByteForByte(t *testing.T) {
	a := newAPI(t, apiOptions{})
	s := newSpelled("PAT-1")
	got := a.receipt(t, a.post("/v1/reports", "application/json", s.body()), http.StatusAccepted)
	msgs := a.readMessages(0, 1, 5*time.Second)
	env, err := report.ParseEnvelope(msgs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(env.Original, s.body()) || got.SubmissionSHA256 != sha(env.Original) {
		t.Fatalf("original %q (sha %s), want %q", env.Original, got.SubmissionSHA256, s.body())
	}

	item := newSpelled("PAT-1")
	batch := append(append([]byte("{\"reports\": [ "), item.body()...), []byte(" ,\n"+string(newSpelled("PAT-1").respelled())+"]}")...)
	r := a.post("/v1/reports/batch", "application/json", batch)
	var br types.BatchResp
	if r.status != http.StatusOK || json.Unmarshal(r.body, &br) != nil || br.Accepted != 2 {
		t.Fatalf("batch: %d %s", r.status, r.body)
	}
	want := bytes.TrimSpace(item.body()) // the item's value: the array's whitespace is not part of it
	msgs = a.readMessages(0, 3, 5*time.Second)
	env, err = report.ParseEnvelope(msgs[1].Value)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(env.Original, want) || br.Results[0].SubmissionSHA256 != sha(want) {
		t.Fatalf("batch item original %q (sha %s), want %q", env.Original, br.Results[0].SubmissionSHA256, want)
	}
}

// A batch gets the same contract per item, with stable statuses and codes; the repeat of an item within the
// batch shares its outcome, or conflicts.
func TestSubmitBatchRequestIDs(t *testing.T) {
	_, dsn := reportdbtest.Open(t)
	a := newAPI(t, apiOptions{mysqlDSN: dsn, extraYAML: countingYAML, rateLimitYAML: receiptsYAML})
	// A batch is one patient's: its token's.
	known, changedLater := newSpelled("PAT-1"), newSpelled("PAT-1")
	r := a.post("/v1/reports/batch", "application/json", batchBody(known.body(), changedLater.body()))
	var first types.BatchResp
	if r.status != http.StatusOK || json.Unmarshal(r.body, &first) != nil || first.Accepted != 2 {
		t.Fatalf("first batch: %d %s", r.status, r.body)
	}
	waitReceipt(t, a, known.id)
	waitReceipt(t, a, changedLater.id)
	records := a.recordCount()

	changed := changedLater
	changed.mobility = "5"
	fresh, twice, split := newSpelled("PAT-1"), newSpelled("PAT-1"), newSpelled("PAT-1")
	splitOther := split
	splitOther.mobility = "4"
	r = a.post("/v1/reports/batch", "application/json", batchBody(
		known.respelled(), // 0: duplicate of the first batch's item
		changed.body(),    // 1: conflict with the first batch's item
		fresh.body(),      // 2: accepted
		twice.body(),      // 3: accepted
		twice.respelled(), // 4: duplicate of item 3
		split.body(),      // 5: accepted
		splitOther.body(), // 6: conflict with item 5
	))
	if bytes.Contains(r.body, []byte("PRIVATE")) {
		t.Errorf("the batch answer echoes content: %s", r.body)
	}
	var got types.BatchResp
	if r.status != http.StatusOK || json.Unmarshal(r.body, &got) != nil {
		t.Fatalf("second batch: %d %s", r.status, r.body)
	}
	if got.Accepted != 3 || got.Duplicate != 2 || got.Conflict != 2 || got.Rejected != 0 || got.Unavailable != 0 {
		t.Fatalf("counts %+v", got)
	}
	wantStatus := []string{"duplicate", "conflict", "accepted", "accepted", "duplicate", "accepted", "conflict"}
	for i, w := range wantStatus {
		res := got.Results[i]
		if res.Status != w {
			t.Errorf("results[%d] = %+v, want %s", i, res, w)
			continue
		}
		switch w {
		case "conflict":
			if res.Error == nil || res.Error.Code != errcode.RequestIDConflict || res.Error.Field != "requestId" || res.ReceivedAt != "" {
				t.Errorf("results[%d] = %+v", i, res)
			}
		case "duplicate", "accepted":
			if res.Error != nil || res.ReceivedAt == "" || res.SubmissionSHA256 == "" {
				t.Errorf("results[%d] = %+v", i, res)
			}
		}
	}
	if d := got.Results[0]; d.ReceivedAt != first.Results[0].ReceivedAt || d.SubmissionSHA256 != sha(bytes.TrimSpace(known.body())) {
		t.Errorf("duplicate of a stored report: %+v, want the receipt %+v", d, first.Results[0])
	}
	if d := got.Results[4]; d.ReceivedAt != got.Results[3].ReceivedAt || d.SubmissionSHA256 != got.Results[3].SubmissionSHA256 {
		t.Errorf("duplicate within the batch: %+v, want item 3's receipt %+v", d, got.Results[3])
	}
	if n := a.recordCount(); n != records+3 {
		t.Fatalf("%d records, want %d: only the three new reports may be produced", n, records+3)
	}
}

// When neither Redis nor MySQL can be asked, the report is produced all the same: epro-mq is the backstop.
func TestRequestIDCheckUnavailableStillProduces(t *testing.T) {
	a := newAPI(t, apiOptions{mysqlDSN: "u:p@tcp(" + closedAddr(t) + ")/epro", redisAddr: closedAddr(t)})
	s := newSpelled("PAT-1")
	a.receipt(t, a.post("/v1/reports", "application/json", s.body()), http.StatusAccepted)
	a.receipt(t, a.post("/v1/reports", "application/json", s.body()), http.StatusAccepted)
	if n := a.recordCount(); n != 2 {
		t.Fatalf("%d records, want both produced", n)
	}
}

func batchBody(items ...[]byte) []byte {
	return append(append([]byte(`{"reports":[`), bytes.Join(items, []byte(","))...), []byte("]}")...)
}
