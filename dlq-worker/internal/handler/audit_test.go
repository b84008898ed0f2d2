package handler_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/dlq-worker/internal/auth"
	"github.com/epro-intake/dlq-worker/internal/store"
	"github.com/epro-intake/dlq-worker/internal/types"
)

const testIssuer = "https://idp.example/ops"

// tokenFrom is a token like token's, with an issuer.
func (w *worker) tokenFrom(issuer, sub, role string) string {
	w.t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iss": issuer, "sub": sub, "role": role,
		"iat": jwt.NewNumericDate(time.Now()), "exp": jwt.NewNumericDate(time.Now().Add(time.Hour))}).SignedString([]byte(testSecret))
	if err != nil {
		w.t.Fatal(err)
	}
	return tok
}

type auditWho struct {
	actor, issuer, addr, before, after, action, outcome string
	at                                                  time.Time
}

func (w *worker) auditWho(id uint64) []auditWho {
	w.t.Helper()
	rows, err := w.db.Query(`SELECT actor, COALESCE(actor_issuer, ''), COALESCE(client_addr, ''),
		COALESCE(state_before, ''), COALESCE(state_after, ''), action, outcome, at
		FROM dead_letter_audit WHERE dead_letter_id = ? ORDER BY id`, id)
	if err != nil {
		w.t.Fatal(err)
	}
	defer rows.Close()
	var out []auditWho
	for rows.Next() {
		var a auditWho
		if err := rows.Scan(&a.actor, &a.issuer, &a.addr, &a.before, &a.after, &a.action, &a.outcome, &a.at); err != nil {
			w.t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

// Replay and discard record who (subject and issuer of the token), from where (the remote address the
// server saw, whatever a forwarded-for header claims), when, and the state before and after.
func TestAuditRecordsWhoAndWhereOnReplayAndDiscard(t *testing.T) {
	w := newWorker(t, workerOptions{})
	dls := w.seed(2, "T-WHO", report.ErrorClassPermanent)
	operator := w.tokenFrom(testIssuer, "otto", auth.RoleOperator)
	start := time.Now().UTC().Add(-time.Second)

	do := func(path string, body any) {
		var b []byte
		if body != nil {
			b, _ = json.Marshal(body)
		}
		req, _ := http.NewRequest(http.MethodPost, w.url+path, bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+operator)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Forwarded-For", "203.0.113.99")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s = %d", path, resp.StatusCode)
		}
	}
	do(idPath(dls[0].id, "/replay"), nil)
	do(idPath(dls[1].id, "/discard"), map[string]string{"reasonCode": "test_data", "note": "training site"})

	for i, want := range []struct{ action, after string }{{"replay", "replayed"}, {"discard", "discarded"}} {
		got := w.auditWho(dls[i].id)
		if len(got) != 1 {
			t.Fatalf("%s: %d audit rows", want.action, len(got))
		}
		a := got[0]
		if a.actor != "otto" || a.issuer != testIssuer || a.action != want.action || a.outcome != "ok" ||
			a.before != "new" || a.after != want.after {
			t.Errorf("%s audit = %+v", want.action, a)
		}
		if !strings.HasPrefix(a.addr, "127.0.0.1:") {
			t.Errorf("%s client address = %q, want the TCP peer 127.0.0.1:port", want.action, a.addr)
		}
		if a.at.Location() != time.UTC || a.at.Before(start) || a.at.After(time.Now().UTC().Add(time.Second)) {
			t.Errorf("%s at = %v, want server UTC now", want.action, a.at)
		}
	}
	// A refused action records the state it found, unchanged.
	if r := w.do(http.MethodPost, idPath(dls[0].id, "/replay"), operator, nil); r.status != http.StatusConflict {
		t.Fatalf("second replay = %d", r.status)
	}
	if got := w.auditWho(dls[0].id); len(got) != 2 || got[1].before != "replayed" || got[1].after != "replayed" ||
		got[1].outcome != "already_replayed" || got[1].issuer != testIssuer {
		t.Errorf("refused replay audit = %+v", got)
	}
}

func TestAuditExportCSVAndJSON(t *testing.T) {
	w := newWorker(t, workerOptions{})
	dls := w.seed(2, "T-EXPORT", report.ErrorClassPermanent)
	mine, other := dls[0], dls[1]
	operator := w.tokenFrom(testIssuer, "otto", auth.RoleOperator)
	reviewer := w.token("rita", auth.RoleReviewer)

	if r := w.do(http.MethodGet, idPath(mine.id, "?reveal=true"), operator, nil); r.status != http.StatusOK {
		t.Fatalf("reveal = %d", r.status)
	}
	note := `said "no", then yes, twice`
	if r := w.do(http.MethodPost, idPath(mine.id, "/discard"), operator, map[string]string{"reasonCode": "superseded", "note": note}); r.status != http.StatusOK {
		t.Fatalf("discard = %d", r.status)
	}
	if r := w.do(http.MethodPost, idPath(other.id, "/replay"), operator, nil); r.status != http.StatusOK {
		t.Fatalf("replay = %d", r.status)
	}

	export := func(query string) response {
		return w.do(http.MethodGet, "/v1/audit/export?"+query, reviewer, nil)
	}
	for _, sel := range []string{"deadLetterId=" + strconv.FormatUint(mine.id, 10), "patientId=" + url.QueryEscape(mine.patient)} {
		r := export(sel + "&format=json")
		if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") ||
			!strings.Contains(r.header.Get("Content-Disposition"), "audit.json") {
			t.Fatalf("%s json = %d %v %s", sel, r.status, r.header, r.body)
		}
		var entries []types.AuditEntry
		r.decode(t, &entries)
		if len(entries) != 2 {
			t.Fatalf("%s: %d entries, want 2: %s", sel, len(entries), r.body)
		}
		reveal, discard := entries[0], entries[1]
		if reveal.Action != "reveal" || reveal.DeadLetterID != mine.id || reveal.Actor != "otto" ||
			reveal.ActorIssuer != testIssuer || reveal.StateBefore != "new" || reveal.StateAfter != "new" ||
			!strings.HasPrefix(reveal.ClientAddr, "127.0.0.1:") {
			t.Errorf("%s reveal entry = %+v", sel, reveal)
		}
		if discard.Action != "discard" || discard.ReasonCode != "superseded" || discard.Reason != note ||
			discard.StateBefore != "new" || discard.StateAfter != "discarded" || discard.ID <= reveal.ID {
			t.Errorf("%s discard entry = %+v", sel, discard)
		}
		if _, err := time.Parse(time.RFC3339Nano, discard.At); err != nil || !strings.HasSuffix(discard.At, "Z") {
			t.Errorf("at = %q, want RFC 3339 UTC", discard.At)
		}

		r = export(sel + "&format=csv")
		if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "text/csv") {
			t.Fatalf("%s csv = %d %v", sel, r.status, r.header)
		}
		records, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
		if err != nil {
			t.Fatalf("%s csv: %v\n%s", sel, err, r.body)
		}
		wantHeader := "id,at,actor,actorIssuer,role,clientAddr,action,outcome,deadLetterId,jobId,stateBefore,stateAfter,reasonCode,reason"
		if len(records) != 3 || strings.Join(records[0], ",") != wantHeader {
			t.Fatalf("%s csv = %q", sel, records)
		}
		row := records[2]
		want := []string{strconv.FormatUint(discard.ID, 10), discard.At, "otto", testIssuer, "operator", discard.ClientAddr,
			"discard", "ok", strconv.FormatUint(mine.id, 10), "", "new", "discarded", "superseded", note}
		if strings.Join(row, "|") != strings.Join(want, "|") {
			t.Errorf("%s csv row = %q, want %q", sel, row, want)
		}
		if strings.Contains(string(r.body), privateNote) {
			t.Errorf("%s: the export holds report content", sel)
		}
	}

	// Another patient's rows stay out; an unknown patient's history is empty, not an error.
	var entries []types.AuditEntry
	export("patientId="+url.QueryEscape(other.patient)+"&format=json").decode(t, &entries)
	if len(entries) != 1 || entries[0].DeadLetterID != other.id || entries[0].Action != "replay" {
		t.Errorf("other patient's export = %+v", entries)
	}
	if r := export("patientId=nobody&format=json"); r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != "[\n]" {
		t.Errorf("empty export = %d %q", r.status, r.body)
	}
	if r := export("patientId=nobody&format=csv"); r.status != http.StatusOK || strings.Count(string(r.body), "\n") != 1 {
		t.Errorf("empty csv export = %d %q", r.status, r.body)
	}
	for name, q := range map[string]string{
		"neither":    "format=json",
		"both":       "deadLetterId=1&patientId=p&format=json",
		"bad format": "deadLetterId=1&format=xml",
		"no format":  "deadLetterId=1",
	} {
		if r := export(q); r.status != http.StatusBadRequest || r.errorCode(t) != "VALIDATION_FAILED" {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
	}
	if r := w.do(http.MethodGet, "/v1/audit/export?deadLetterId=1&format=json", "", nil); r.status != http.StatusUnauthorized {
		t.Errorf("export without a token = %d", r.status)
	}
}

// A degraded dead letter is listed with its reason, filtered by degraded=true, and its replay sends the raw
// record, byte for byte, with the dead-letter headers stripped.
func TestDegradedDeadLetterIsListedAndReplayedFromItsRawBytes(t *testing.T) {
	w := newWorker(t, workerOptions{})
	operator := w.token("otto", auth.RoleOperator)
	rid, val := envelope("P-LONG", "T-DEG", "9")
	key := strings.Repeat("k", 2000)
	w.publish(w.deadLetter(key, val, rid, report.ErrorClassPoison))
	normal := w.seed(1, "T-DEG", report.ErrorClassPermanent)[0]
	id := w.waitArchived(rid)

	var list types.ListResp
	w.do(http.MethodGet, "/v1/dead-letters?degraded=true", operator, nil).decode(t, &list)
	if len(list.Items) != 1 || list.Items[0].ID != id || !list.Items[0].Degraded ||
		!strings.Contains(list.Items[0].DegradedReason, "key of 2000 bytes") {
		t.Fatalf("degraded list = %+v", list.Items)
	}
	var whole types.ListResp
	w.do(http.MethodGet, "/v1/dead-letters?degraded=false", operator, nil).decode(t, &whole)
	if len(whole.Items) != 1 || whole.Items[0].ID != normal.id || whole.Items[0].Degraded {
		t.Fatalf("whole list = %+v", whole.Items)
	}
	var d types.DeadLetterDetail
	w.do(http.MethodGet, idPath(id, "?reveal=true"), operator, nil).decode(t, &d)
	if d.Key != encodeB64(key) || d.Payload != encodeB64(string(val)) {
		t.Errorf("revealed key/payload are not the raw record's")
	}
	var ready types.ReplayPreviewResp
	w.do(http.MethodGet, idPath(id, "/replay-preview"), operator, nil).decode(t, &ready)
	if !ready.Replayable || ready.Topic != w.source {
		t.Errorf("preview of a degraded dead letter with its bytes = %+v", ready)
	}
	if r := w.do(http.MethodPost, idPath(id, "/replay"), operator, nil); r.status != http.StatusOK {
		t.Fatalf("replay = %d %s", r.status, r.body)
	}
	msgs := w.sourceRecords(1, 20*time.Second)
	if len(msgs) != 1 || string(msgs[0].Key) != key || !bytes.Equal(msgs[0].Value, val) {
		t.Fatalf("replayed %d records; key/value not the original", len(msgs))
	}
	if v, _ := header(msgs[0], report.HeaderRequestID); v != rid {
		t.Errorf("x-request-id = %q", v)
	}
	if _, ok := header(msgs[0], report.HeaderDLTErrorClass); ok {
		t.Error("dead-letter headers were not stripped")
	}
	if v, _ := header(msgs[0], report.HeaderReplayOf); v != strconv.FormatUint(id, 10) {
		t.Errorf("x-replay-of = %q", v)
	}

	// The last-resort form, without its bytes, is refused and audited; nothing is sent.
	noBytes, _, err := w.svc.DeadLetters.Insert(context.Background(), store.DeadLetter{DLQTopic: w.dlq, DLQPartition: 0,
		DLQOffset: 1 << 40, DeadLetteredAt: time.Now(), ErrorClass: "poison", OriginalTopic: w.source,
		Degraded: true, DegradedReason: "bytes not kept", RawSHA256: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	var pre types.ReplayPreviewResp
	w.do(http.MethodGet, idPath(noBytes, "/replay-preview"), operator, nil).decode(t, &pre)
	if pre.Replayable || !strings.Contains(pre.Reason, "bytes were not archived") {
		t.Errorf("preview without bytes = %+v", pre)
	}
	if r := w.do(http.MethodPost, idPath(noBytes, "/replay"), operator, nil); r.status != http.StatusConflict || r.errorCode(t) != "CONFLICT" {
		t.Fatalf("replay without bytes = %d %s", r.status, r.body)
	}
	if got := w.audit(noBytes); len(got) != 1 || got[0].outcome != "conflict" {
		t.Errorf("audit of the refused replay = %+v", got)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(w.sourceRecords(1, 5*time.Second)); n != 1 {
		t.Errorf("source has %d records, want 1", n)
	}
}

func encodeB64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// A history longer than one flush goes out whole and in order.
func TestAuditExportOfALongHistory(t *testing.T) {
	w := newWorker(t, workerOptions{})
	dl := w.seed(1, "T-LONG", report.ErrorClassPermanent)[0]
	const n = 250
	for i := 0; i < n; i++ {
		if err := w.svc.Audit.Append(context.Background(), store.AuditEntry{Actor: "otto", Role: "operator",
			Action: store.ActionReveal, Outcome: store.OutcomeOK, DeadLetterID: dl.id, Reason: strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	reviewer := w.token("rita", auth.RoleReviewer)
	q := "/v1/audit/export?deadLetterId=" + strconv.FormatUint(dl.id, 10)
	var entries []types.AuditEntry
	w.do(http.MethodGet, q+"&format=json", reviewer, nil).decode(t, &entries)
	if len(entries) != n {
		t.Fatalf("json export has %d entries, want %d", len(entries), n)
	}
	records, err := csv.NewReader(bytes.NewReader(w.do(http.MethodGet, q+"&format=csv", reviewer, nil).body)).ReadAll()
	if err != nil || len(records) != n+1 {
		t.Fatalf("csv export has %d lines (%v), want %d", len(records), err, n+1)
	}
	for i := 0; i < n; i++ {
		if entries[i].Reason != strconv.Itoa(i) || records[i+1][13] != strconv.Itoa(i) {
			t.Fatalf("row %d out of order: %q / %q", i, entries[i].Reason, records[i+1][13])
		}
	}
}
