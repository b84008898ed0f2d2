package handler_test

import (
	"cmp"
	"encoding/base64"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/dlq-worker/internal/auth"
	"github.com/epro-intake/dlq-worker/internal/logic"
	"github.com/epro-intake/dlq-worker/internal/types"
)

func TestAuthentication(t *testing.T) {
	w := newWorker(t, workerOptions{})
	dl := w.seed(1, "T-AUTH", report.ErrorClassPermanent)[0]
	reviewer := w.token("rita", auth.RoleReviewer)
	operator := w.token("otto", auth.RoleOperator)

	expired, _ := auth.Mint([]byte(testSecret), "role", "rita", auth.RoleReviewer, time.Minute, time.Now().Add(-time.Hour))
	otherKey, _ := auth.Mint([]byte("another-secret-key-0123456789abcdef"), "role", "rita", auth.RoleOperator, time.Hour, time.Now())
	noExp, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "rita", "role": "operator"}).SignedString([]byte(testSecret))
	badRole, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "rita", "role": "admin", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(testSecret))
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "rita", "role": "operator", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(jwt.UnsafeAllowNoneSignatureType)

	for name, tok := range map[string]string{"missing": "", "garbage": "not-a-jwt", "expired": expired,
		"other key": otherKey, "no exp": noExp, "unknown role": badRole, "alg none": none} {
		r := w.do(http.MethodGet, "/v1/dead-letters", tok, nil)
		if r.status != http.StatusUnauthorized || r.errorCode(t) != "UNAUTHORIZED" {
			t.Errorf("%s token: %d %s, want 401 UNAUTHORIZED", name, r.status, r.body)
		}
	}

	// Reviewers read; everything that changes or reveals needs an operator.
	for _, path := range []string{"/v1/dead-letters", idPath(dl.id, ""), idPath(dl.id, "/replay-preview"), "/v1/stats", "/v1/discard-reasons"} {
		if r := w.do(http.MethodGet, path, reviewer, nil); r.status != http.StatusOK {
			t.Errorf("reviewer GET %s = %d %s", path, r.status, r.body)
		}
	}
	forbidden := []struct {
		method, path string
		body         any
	}{
		{http.MethodGet, idPath(dl.id, "?reveal=true"), nil},
		{http.MethodPost, idPath(dl.id, "/replay"), nil},
		{http.MethodPost, idPath(dl.id, "/discard"), map[string]string{"reasonCode": "other", "note": "x"}},
		{http.MethodPost, "/v1/replay-jobs", map[string]any{"dryRun": true}},
		{http.MethodPost, "/v1/replay-jobs/1/resume", nil},
	}
	for _, f := range forbidden {
		r := w.do(f.method, f.path, reviewer, f.body)
		if r.status != http.StatusForbidden || r.errorCode(t) != "FORBIDDEN" {
			t.Errorf("reviewer %s %s = %d %s, want 403 FORBIDDEN", f.method, f.path, r.status, r.body)
		}
	}
	if w.status(dl.id) != "new" || len(w.audit(dl.id)) != 0 {
		t.Fatalf("forbidden calls changed the dead letter: status %s, audit %v", w.status(dl.id), w.audit(dl.id))
	}
	if r := w.do(http.MethodGet, "/v1/dead-letters", operator, nil); r.status != http.StatusOK {
		t.Errorf("operator list = %d", r.status)
	}
	// Unauthenticated endpoints.
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/ui/", "/ui/app.js"} {
		if r := w.do(http.MethodGet, path, "", nil); r.status != http.StatusOK {
			t.Errorf("GET %s = %d", path, r.status)
		}
	}
}

func TestArchiveAndListMetadataOnly(t *testing.T) {
	w := newWorker(t, workerOptions{})
	perm := w.seed(3, "T-LIST-A", report.ErrorClassPermanent)
	poison := w.seed(2, "T-LIST-B", report.ErrorClassPoison)
	tok := w.token("rita", auth.RoleReviewer)

	// Newest first means highest id first: ids follow the order records were archived in.
	want := []uint64{perm[0].id, perm[1].id, perm[2].id, poison[0].id, poison[1].id}
	slices.SortFunc(want, func(a, b uint64) int { return cmp.Compare(b, a) })
	var page types.ListResp
	r := w.do(http.MethodGet, "/v1/dead-letters?limit=2", tok, nil)
	r.decode(t, &page)
	if len(page.Items) != 2 || page.NextCursor == "" || page.Items[0].ID != want[0] || page.Items[1].ID != want[1] {
		t.Fatalf("first page = %s, want ids %v", r.body, want[:2])
	}
	if strings.Contains(string(r.body), privateNote) || strings.Contains(string(r.body), "payload") {
		t.Fatalf("list shows report content: %s", r.body)
	}
	var all []uint64
	for cursor := ""; ; {
		var p types.ListResp
		w.do(http.MethodGet, "/v1/dead-letters?limit=2&cursor="+cursor, tok, nil).decode(t, &p)
		for _, it := range p.Items {
			all = append(all, it.ID)
		}
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
	}
	if !slices.Equal(all, want) {
		t.Fatalf("pages = %v, want newest first %v", all, want)
	}

	var one types.ListResp
	w.do(http.MethodGet, "/v1/dead-letters?patientId="+poison[0].patient, tok, nil).decode(t, &one)
	if len(one.Items) != 1 {
		t.Fatalf("patient filter = %+v", one)
	}
	first := one.Items[0]
	if first.ErrorClass != "poison" || first.Attempts != 5 || first.TrialID != "T-LIST-B" || first.PatientID != poison[0].patient ||
		first.RequestID != poison[0].requestID || first.OriginalTopic != w.source || first.OriginalOffset == nil || *first.OriginalOffset != 17 ||
		first.Status != "new" || first.DeadLetteredAt == "" {
		t.Errorf("summary = %+v", first)
	}

	desc := func(ids ...uint64) []uint64 {
		slices.SortFunc(ids, func(a, b uint64) int { return cmp.Compare(b, a) })
		return ids
	}
	filters := map[string][]uint64{
		"errorClass=permanent":         desc(perm[0].id, perm[1].id, perm[2].id),
		"trialId=T-LIST-B":             desc(poison[0].id, poison[1].id),
		"patientId=" + perm[1].patient: {perm[1].id},
		"status=replayed":              nil,
		"from=" + time.Now().Add(time.Hour).UTC().Format(time.RFC3339): nil,
		"to=" + time.Now().Add(time.Hour).UTC().Format(time.RFC3339):   want,
	}
	for q, want := range filters {
		var p types.ListResp
		w.do(http.MethodGet, "/v1/dead-letters?"+q, tok, nil).decode(t, &p)
		var got []uint64
		for _, it := range p.Items {
			got = append(got, it.ID)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: got %v, want %v", q, got, want)
		}
	}
	for _, q := range []string{"status=bogus", "from=yesterday", "limit=-1", "cursor=abc", "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z"} {
		r := w.do(http.MethodGet, "/v1/dead-letters?"+q, tok, nil)
		if r.status != http.StatusBadRequest || r.errorCode(t) != "VALIDATION_FAILED" {
			t.Errorf("%s: %d %s, want 400 VALIDATION_FAILED", q, r.status, r.body)
		}
	}
	if r := w.do(http.MethodGet, idPath(999999, ""), tok, nil); r.status != http.StatusNotFound || r.errorCode(t) != "NOT_FOUND" {
		t.Errorf("unknown id = %d %s", r.status, r.body)
	}
}

func TestGetHidesPayloadUnlessRevealedAndAuditsReveal(t *testing.T) {
	w := newWorker(t, workerOptions{})
	dl := w.seed(1, "T-GET", report.ErrorClassPermanent)[0]
	reviewer := w.token("rita", auth.RoleReviewer)
	operator := w.token("otto", auth.RoleOperator)

	var d types.DeadLetterDetail
	r := w.do(http.MethodGet, idPath(dl.id, ""), operator, nil)
	r.decode(t, &d)
	if strings.Contains(string(r.body), privateNote) || d.Payload != "" || d.Revealed || d.Key != "" {
		t.Fatalf("get without reveal shows the payload: %s", r.body)
	}
	if d.PayloadBytes == 0 || d.DLQTopic != w.dlq || d.OriginalConsumerGroup != "epro-mq" || d.FirstFailure == "" ||
		d.LastFailure == "" || d.OriginalTimestamp == "" || d.ReportState != "unknown" || len(d.Headers) != 13 {
		t.Errorf("detail = %s", r.body)
	}
	if got := w.audit(dl.id); len(got) != 0 {
		t.Fatalf("a plain get wrote audit rows: %v", got)
	}
	// A reviewer asking for reveal=false gets the metadata; reveal=true is refused without an audit row.
	if r := w.do(http.MethodGet, idPath(dl.id, "?reveal=false"), reviewer, nil); r.status != http.StatusOK {
		t.Errorf("reviewer reveal=false = %d", r.status)
	}

	r = w.do(http.MethodGet, idPath(dl.id, "?reveal=true"), operator, nil)
	d = types.DeadLetterDetail{}
	r.decode(t, &d)
	payload, _ := base64.StdEncoding.DecodeString(d.Payload)
	if !d.Revealed || !strings.Contains(string(payload), privateNote) {
		t.Fatalf("reveal = %s", r.body)
	}
	if key, _ := base64.StdEncoding.DecodeString(d.Key); string(key) != dl.patient {
		t.Errorf("revealed key = %q", key)
	}
	got := w.audit(dl.id)
	if len(got) != 1 || got[0].actor != "otto" || got[0].role != "operator" || got[0].action != "reveal" || got[0].outcome != "ok" {
		t.Fatalf("audit after reveal = %+v", got)
	}
	if len(d.History) != 1 || d.History[0].Action != "reveal" || d.History[0].Actor != "otto" {
		t.Errorf("history = %+v", d.History)
	}
	w.do(http.MethodGet, idPath(dl.id, "?reveal=true"), operator, nil)
	if n := len(w.audit(dl.id)); n != 2 {
		t.Errorf("second reveal: %d audit rows, want 2", n)
	}
}

func TestReplayReproducesOriginalRecordOnce(t *testing.T) {
	w := newWorker(t, workerOptions{})
	dl := w.seed(1, "T-REPLAY", report.ErrorClassPermanent)[0]
	operator := w.token("otto", auth.RoleOperator)

	var pre types.ReplayPreviewResp
	w.do(http.MethodGet, idPath(dl.id, "/replay-preview"), operator, nil).decode(t, &pre)
	if !pre.Replayable || pre.ReportState != "unknown" || pre.Topic != w.source || pre.RequestID != dl.requestID {
		t.Fatalf("preview without reports table = %+v", pre)
	}
	w.createReports() // the table exists, the report is not in it
	w.do(http.MethodGet, idPath(dl.id, "/replay-preview"), operator, nil).decode(t, &pre)
	if pre.ReportState != "not_stored" {
		t.Fatalf("preview = %+v, want not_stored", pre)
	}

	// The actor comes from the token even when the body claims another.
	r := w.do(http.MethodPost, idPath(dl.id, "/replay"), operator, map[string]string{"actor": "mallory"})
	var rr types.ReplayResp
	r.decode(t, &rr)
	if r.status != http.StatusOK || rr.Status != "replayed" || rr.Topic != w.source || rr.ReportState != "not_stored" {
		t.Fatalf("replay = %d %s", r.status, r.body)
	}
	msgs := w.sourceRecords(1, 20*time.Second)
	if len(msgs) != 1 {
		t.Fatalf("source has %d records, want 1", len(msgs))
	}
	m := msgs[0]
	var orig struct{ value []byte }
	if err := w.db.QueryRow("SELECT record_value FROM dead_letters WHERE id = ?", dl.id).Scan(&orig.value); err != nil {
		t.Fatal(err)
	}
	if string(m.Key) != dl.patient || string(m.Value) != string(orig.value) {
		t.Errorf("replayed key/value differ from the original")
	}
	var keys []string
	for _, h := range m.Headers {
		keys = append(keys, h.Key)
	}
	wantKeys := []string{report.HeaderRequestID, report.HeaderSchemaVersion, report.HeaderTraceparent, report.HeaderReplayOf}
	if !slices.Equal(keys, wantKeys) {
		t.Errorf("replayed headers = %v, want %v (dead-letter headers stripped)", keys, wantKeys)
	}
	if v, _ := header(m, report.HeaderReplayOf); v != strconv.FormatUint(dl.id, 10) {
		t.Errorf("x-replay-of = %q, want %d", v, dl.id)
	}
	if v, _ := header(m, report.HeaderRequestID); v != dl.requestID {
		t.Errorf("x-request-id = %q", v)
	}
	if w.status(dl.id) != "replayed" {
		t.Fatalf("status = %s", w.status(dl.id))
	}

	// Once epro-mq stored it, the preview says so; a second replay sends nothing and says so stably.
	w.createReports(dl.requestID)
	w.do(http.MethodGet, idPath(dl.id, "/replay-preview"), operator, nil).decode(t, &pre)
	if pre.ReportState != "stored" || pre.Replayable || pre.Reason != "already replayed" {
		t.Errorf("preview after replay = %+v", pre)
	}
	r = w.do(http.MethodPost, idPath(dl.id, "/replay"), operator, nil)
	if r.status != http.StatusConflict || r.errorCode(t) != logic.CodeAlreadyReplayed {
		t.Fatalf("second replay = %d %s, want 409 ALREADY_REPLAYED", r.status, r.body)
	}
	time.Sleep(500 * time.Millisecond)
	if n := len(w.sourceRecords(1, 5*time.Second)); n != 1 {
		t.Fatalf("source has %d records after the second replay, want 1", n)
	}
	got := w.audit(dl.id)
	if len(got) != 2 || got[0].actor != "otto" || got[0].outcome != "ok" || got[1].outcome != "already_replayed" {
		t.Fatalf("audit = %+v", got)
	}
	// A replayed dead letter cannot be discarded.
	r = w.do(http.MethodPost, idPath(dl.id, "/discard"), operator, map[string]string{"reasonCode": "duplicate", "note": "n"})
	if r.status != http.StatusConflict || r.errorCode(t) != "CONFLICT" {
		t.Errorf("discard after replay = %d %s", r.status, r.body)
	}
}

func TestConcurrentReplaysProduceOnce(t *testing.T) {
	if !infratest.IsReal(infratest.KindMySQL) {
		t.Skip("the embedded MySQL has no row locks, which this guarantee rests on")
	}
	w := newWorker(t, workerOptions{})
	dl := w.seed(1, "T-RACE", report.ErrorClassPermanent)[0]
	operator := w.token("otto", auth.RoleOperator)
	const n = 4
	codes := make(chan int, n)
	for i := 0; i < n; i++ {
		go func() { codes <- w.do(http.MethodPost, idPath(dl.id, "/replay"), operator, nil).status }()
	}
	ok := 0
	for i := 0; i < n; i++ {
		switch c := <-codes; c {
		case http.StatusOK:
			ok++
		case http.StatusConflict:
		default:
			t.Errorf("replay answered %d", c)
		}
	}
	if ok != 1 {
		t.Fatalf("%d replays succeeded, want exactly 1", ok)
	}
	time.Sleep(500 * time.Millisecond)
	if got := len(w.sourceRecords(1, 10*time.Second)); got != 1 {
		t.Fatalf("source has %d records, want 1", got)
	}
}

func TestReplayFailureLeavesDeadLetterNew(t *testing.T) {
	missing := "missing_topic_never_created"
	w := newWorker(t, workerOptions{allowMissing: missing, produceAttempts: 1})
	operator := w.token("otto", auth.RoleOperator)
	rid, val := envelope("P-FAIL", "T-FAIL", "9")
	m := w.deadLetter("P-FAIL", val, rid, report.ErrorClassPermanent)
	for i, h := range m.Headers {
		if h.Key == report.HeaderDLTOriginalTopic {
			m.Headers[i].Value = []byte(missing)
		}
	}
	rid2, val2 := envelope("P-FAIL2", "T-FAIL", "9")
	forbiddenTopic := w.deadLetter("P-FAIL2", val2, rid2, report.ErrorClassPermanent)
	for i, h := range forbiddenTopic.Headers {
		if h.Key == report.HeaderDLTOriginalTopic {
			forbiddenTopic.Headers[i].Value = []byte("some.other.topic")
		}
	}
	w.publish(m, forbiddenTopic)
	id := w.waitArchived(rid)
	r := w.do(http.MethodPost, idPath(id, "/replay"), operator, nil)
	if r.status != http.StatusServiceUnavailable || r.errorCode(t) != logic.CodeReplayUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("replay to a missing topic = %d %s", r.status, r.body)
	}
	if w.status(id) != "new" {
		t.Fatalf("status after failed replay = %s", w.status(id))
	}
	if got := w.audit(id); len(got) != 1 || got[0].outcome != "failed" {
		t.Fatalf("audit = %+v", got)
	}

	fid := w.waitArchived(rid2)
	r = w.do(http.MethodPost, idPath(fid, "/replay"), operator, nil)
	if r.status != http.StatusConflict || r.errorCode(t) != "CONFLICT" {
		t.Fatalf("replay to a topic outside AllowedTopics = %d %s", r.status, r.body)
	}
	if w.status(fid) != "new" {
		t.Fatal("refused replay changed the status")
	}
}

func TestDiscardKeepsRecordAndAudits(t *testing.T) {
	w := newWorker(t, workerOptions{})
	dl := w.seed(1, "T-DISCARD", report.ErrorClassPoison)[0]
	operator := w.token("otto", auth.RoleOperator)

	var reasons types.DiscardReasonsResp
	w.do(http.MethodGet, "/v1/discard-reasons", operator, nil).decode(t, &reasons)
	if !slices.Contains(reasons.Codes, "test_data") {
		t.Fatalf("reasons = %v", reasons.Codes)
	}
	for name, body := range map[string]map[string]string{
		"unknown code": {"reasonCode": "because", "note": "x"},
		"no code":      {"note": "x"},
		"no note":      {"reasonCode": "test_data"},
		"blank note":   {"reasonCode": "test_data", "note": "   "},
		"long note":    {"reasonCode": "test_data", "note": strings.Repeat("x", 1001)},
	} {
		r := w.do(http.MethodPost, idPath(dl.id, "/discard"), operator, body)
		if r.status != http.StatusBadRequest || r.errorCode(t) != "VALIDATION_FAILED" {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
	}
	if w.status(dl.id) != "new" {
		t.Fatal("invalid discard changed the status")
	}
	r := w.do(http.MethodPost, idPath(dl.id, "/discard"), operator,
		map[string]string{"reasonCode": "test_data", "note": "sent from the training site", "actor": "mallory"})
	if r.status != http.StatusOK {
		t.Fatalf("discard = %d %s", r.status, r.body)
	}
	var reason string
	if err := w.db.QueryRow("SELECT discard_reason FROM dead_letters WHERE id = ?", dl.id).Scan(&reason); err != nil || reason != "test_data" {
		t.Fatalf("discard_reason = %q, %v", reason, err)
	}
	if w.status(dl.id) != "discarded" {
		t.Fatalf("status = %s", w.status(dl.id))
	}
	got := w.audit(dl.id)
	if len(got) != 1 || got[0].actor != "otto" || got[0].action != "discard" || got[0].reasonCode != "test_data" ||
		got[0].reason != "sent from the training site" || got[0].outcome != "ok" {
		t.Fatalf("audit = %+v", got)
	}
	r = w.do(http.MethodPost, idPath(dl.id, "/replay"), operator, nil)
	if r.status != http.StatusConflict || r.errorCode(t) != "CONFLICT" {
		t.Errorf("replay of a discarded dead letter = %d %s", r.status, r.body)
	}
	r = w.do(http.MethodPost, idPath(dl.id, "/discard"), operator, map[string]string{"reasonCode": "other", "note": "again"})
	if r.status != http.StatusConflict {
		t.Errorf("second discard = %d", r.status)
	}
	// There is no delete endpoint.
	if r := w.do(http.MethodDelete, idPath(dl.id, ""), operator, nil); r.status != http.StatusMethodNotAllowed && r.status != http.StatusNotFound {
		t.Errorf("DELETE = %d", r.status)
	}
	var n int
	_ = w.db.QueryRow("SELECT COUNT(*) FROM dead_letters WHERE id = ?", dl.id).Scan(&n)
	if n != 1 {
		t.Fatal("the discarded record is gone")
	}
}

func TestStatsAndMetrics(t *testing.T) {
	w := newWorker(t, workerOptions{})
	perm := w.seed(2, "T-STATS", report.ErrorClassPermanent)
	w.seed(3, "T-STATS", report.ErrorClassPoison)
	operator := w.token("otto", auth.RoleOperator)
	w.do(http.MethodPost, idPath(perm[0].id, "/discard"), operator, map[string]string{"reasonCode": "duplicate", "note": "dup"})
	time.Sleep(1100 * time.Millisecond) // the oldest unresolved dead letter ages

	var st types.StatsResp
	w.do(http.MethodGet, "/v1/stats", w.token("rita", auth.RoleReviewer), nil).decode(t, &st)
	if st.ByStatus["new"] != 4 || st.ByStatus["discarded"] != 1 || st.ByStatus["replayed"] != 0 {
		t.Errorf("byStatus = %v", st.ByStatus)
	}
	if len(st.ByClass) != 2 || st.ByClass[0].ErrorClass != "permanent" || st.ByClass[0].ByStatus["new"] != 1 || st.ByClass[1].ByStatus["new"] != 3 {
		t.Errorf("byClass = %+v", st.ByClass)
	}
	if st.OldestUnresolvedAgeSeconds < 1 || st.OldestUnresolvedAt == "" {
		t.Errorf("oldest = %v at %q", st.OldestUnresolvedAgeSeconds, st.OldestUnresolvedAt)
	}

	r := w.do(http.MethodGet, "/metrics", "", nil)
	body := string(r.body)
	for _, want := range []string{
		`dlq_worker_dead_letters_ingested_total{error_class="permanent"} 2`,
		`dlq_worker_dead_letters_ingested_total{error_class="poison"} 3`,
		"dlq_worker_dead_letters_unresolved 4",
		"dlq_worker_archive_up 1",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	age := metricValue(t, body, "dlq_worker_oldest_unresolved_age_seconds")
	if age < 1 || age > 600 {
		t.Errorf("oldest age gauge = %v", age)
	}
	if strings.Contains(body, privateNote) || strings.Contains(body, perm[1].patient) {
		t.Error("metrics expose report content or ids")
	}
}

func metricValue(t *testing.T, body, name string) float64 {
	t.Helper()
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("metric %s missing", name)
	return 0
}

func TestWebPageIsServed(t *testing.T) {
	w := newWorker(t, workerOptions{})
	req, _ := http.NewRequest(http.MethodGet, w.url+"/", nil)
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("GET / = %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	r := w.do(http.MethodGet, "/ui/", "", nil)
	if !strings.Contains(string(r.body), `<script src="app.js"></script>`) || !strings.Contains(string(r.body), "Content-Security-Policy") {
		t.Errorf("/ui/ = %d %.200s", r.status, r.body)
	}
	if r := w.do(http.MethodGet, "/ui/app.js", "", nil); !strings.Contains(r.header.Get("Content-Type"), "javascript") {
		t.Errorf("app.js Content-Type = %q", r.header.Get("Content-Type"))
	}
}

// Readiness follows MySQL: ready while it answers, 503 NOT_READY once it does not; liveness stays 200.
func TestReadyzFollowsMySQL(t *testing.T) {
	w := newWorker(t, workerOptions{})
	if r := w.do(http.MethodGet, "/readyz", "", nil); r.status != http.StatusOK {
		t.Fatalf("readyz with MySQL up = %d %s", r.status, r.body)
	}
	if err := w.db.Close(); err != nil {
		t.Fatal(err)
	}
	r := w.do(http.MethodGet, "/readyz", "", nil)
	if r.status != http.StatusServiceUnavailable || r.errorCode(t) != logic.CodeNotReady || r.header.Get("Retry-After") == "" {
		t.Fatalf("readyz with MySQL closed = %d %s (Retry-After %q)", r.status, r.body, r.header.Get("Retry-After"))
	}
	if r := w.do(http.MethodGet, "/healthz", "", nil); r.status != http.StatusOK {
		t.Fatalf("healthz with MySQL closed = %d", r.status)
	}
}
