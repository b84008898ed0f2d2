//go:build linux

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/e2e/internal/stack"
)

// The dead-letter round trip across the real binaries: epro-api takes reports, epro-mq stores them or
// dead-letters them, dlq-worker archives the dead letters in MySQL, and an operator replays or discards them
// through dlq-worker's API once the cause is fixed.

const (
	roundTripQuestionnaire  = "eq-5d-5l"
	roundTripKnownVersion   = "2.1"
	roundTripMissingVersion = "3.0"
	roundTripAnswerMarker   = "DL-ROUNDTRIP-PRIVATE-ANSWER"
)

// roundTripEnv is the pipeline tests' environment (its own topics, group and database) with dlq-worker
// beside epro-api and epro-mq.
type roundTripEnv struct {
	*pipelineEnv
	apiURL string
	dlqURL string
	mq     *stack.Proc
}

func newRoundTripEnv(t *testing.T) *roundTripEnv {
	t.Helper()
	e := &roundTripEnv{pipelineEnv: newPipelineEnv(t, 2)}
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		t.Fatal(err)
	}
	e.st.Env = append(e.st.Env, "EPRO_DLQ_JWT_KEY="+hex.EncodeToString(key[:]))
	return e
}

func (e *roundTripEnv) wait(timeout time.Duration, what string, cond func() bool) {
	e.t.Helper()
	e.waitFor(timeout, what, func() (bool, string) { return cond(), "not yet" })
}

func (e *roundTripEnv) startMQ(versions ...string) {
	e.t.Helper()
	var catalogue []any
	for _, v := range versions {
		catalogue = append(catalogue, roundTripQuestionnaire+"@"+v)
	}
	cfg := e.writeMQConfig("epro-mq", map[string]any{
		"Name":                 "epro-mq-" + e.group,
		"Questionnaires":       catalogue,
		"Retry.MaxAttempts":    2,
		"Retry.InitialBackoff": "50ms",
		"Retry.MaxBackoff":     "100ms",
	})
	e.mq = startService(e.t, e.st, "epro-mq", "epro-mq", cfg)
}

type roundTripResp struct {
	status int
	body   []byte
}

func (r roundTripResp) code() string {
	var e struct{ Code string }
	_ = json.Unmarshal(r.body, &e)
	return e.Code
}

func (e *roundTripEnv) do(method, url, token string, body any) roundTripResp {
	e.t.Helper()
	var data []byte
	if body != nil {
		data, _ = json.Marshal(body)
	}
	var header []string
	if token != "" {
		header = []string{"Authorization", "Bearer " + token}
	}
	code, answer, err := stack.Call(context.Background(), &http.Client{Timeout: 15 * time.Second}, method, url, data, header...)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, url, err)
	}
	return roundTripResp{status: code, body: answer}
}

// patientToken is patient's epro-api token, as the patient's app would send it.
func (e *roundTripEnv) patientToken(patient string) string {
	e.t.Helper()
	authz, err := e.st.Tokens.Authorization(patient)
	if err != nil {
		e.t.Fatal(err)
	}
	return strings.TrimPrefix(authz, "Bearer ")
}

// token mints a token with the dlq-worker binary's own token command, as an operator would.
func (e *roundTripEnv) token(cfg, sub, role string) string {
	e.t.Helper()
	out, err := e.st.Command(context.Background(), "dlq-worker", "token", "-f", cfg, "-sub", sub, "-role", role, "-ttl", "1h").Output()
	if err != nil {
		e.t.Fatalf("dlq-worker token: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func roundTripSubmission(requestID, patient, trial, version string) map[string]any {
	return map[string]any{
		"requestId": requestID, "patientId": patient, "trialId": trial,
		"questionnaireId": roundTripQuestionnaire, "questionnaireVersion": version,
		"submittedAt": time.Now().Add(-time.Hour).Format(time.RFC3339),
		"answers":     map[string]any{"mobility": 2, "note": roundTripAnswerMarker},
	}
}

func (e *roundTripEnv) count(query string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.db.QueryRow(query, args...).Scan(&n); err != nil {
		return -1 // the table may not exist yet
	}
	return n
}

// expectCount fails the test unless query counts want rows.
func (e *roundTripEnv) expectCount(want int, what, query string, args ...any) {
	e.t.Helper()
	if n := e.count(query, args...); n != want {
		e.t.Errorf("%s: %d, want %d", what, n, want)
	}
}

// expect fails the test unless r has status and, when code is set, that error code.
func (e *roundTripEnv) expect(what string, r roundTripResp, status int, code string) {
	e.t.Helper()
	if r.status != status || (code != "" && r.code() != code) {
		e.t.Errorf("%s = %d %s, want %d %s", what, r.status, r.body, status, code)
	}
}

type deadLetterRow struct {
	id                                uint64
	originalTopic, originalGroup      sql.NullString
	originalPartition, originalOffset sql.NullInt64
	originalTimestamp, first, last    sql.NullTime
	errorClass, errorMessage, status  string
	attempts                          int
	requestID, patientID, trialID     sql.NullString
	headers                           string
	value, key                        []byte
}

func (e *roundTripEnv) rows() []deadLetterRow {
	e.t.Helper()
	rows, err := e.db.Query(`SELECT id, original_topic, original_consumer_group, original_partition, original_offset,
		original_timestamp, first_failure_at, last_failure_at, error_class, error_message, status, attempts,
		request_id, patient_id, trial_id, headers, record_value, record_key FROM dead_letters ORDER BY id`)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []deadLetterRow
	for rows.Next() {
		var r deadLetterRow
		if err := rows.Scan(&r.id, &r.originalTopic, &r.originalGroup, &r.originalPartition, &r.originalOffset,
			&r.originalTimestamp, &r.first, &r.last, &r.errorClass, &r.errorMessage, &r.status, &r.attempts,
			&r.requestID, &r.patientID, &r.trialID, &r.headers, &r.value, &r.key); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func TestDeadLetterRoundTrip(t *testing.T) {
	e := newRoundTripEnv(t)

	// epro-mq knows only version 2.1 of the questionnaire; 3.0 will fail permanently until it is added.
	e.startMQ(roundTripKnownVersion)
	_, e.apiURL = e.startAPI()
	dlqCfg := renderConfig(t, e.st, "dlq-worker", "dlq-worker", map[string]any{
		"DeadLetters.Topic":         e.dlqTopic,
		"DeadLetters.Group":         infratest.UniqueName(t, "dlqw"),
		"DeadLetters.MaxWait":       "100ms",
		"Replay.AllowedTopics":      []any{e.topic},
		"Replay.Bulk.CheckInterval": "200ms",
	})
	_, e.dlqURL = startHTTP(t, e.st, "dlq-worker", dlqCfg, "EPRO_DLQ_PORT")

	operator := e.token(dlqCfg, "alice", "operator")
	reviewer := e.token(dlqCfg, "rita", "reviewer")
	trial := "TRIAL-DL-" + stack.NewUUID()[:8]

	// Two good reports and one of the missing version, through the API.
	good := []string{stack.NewUUID(), stack.NewUUID()}
	for i, id := range good {
		patient := fmt.Sprintf("P-GOOD-%d", i)
		r := e.do(http.MethodPost, e.apiURL+"/v1/reports", e.patientToken(patient), roundTripSubmission(id, patient, trial, roundTripKnownVersion))
		if r.status != http.StatusAccepted {
			t.Fatalf("submit good report: %d %s", r.status, r.body)
		}
	}
	fixable := stack.NewUUID()
	// Without a token, or with another patient's, the API takes nothing.
	if r := e.do(http.MethodPost, e.apiURL+"/v1/reports", "", roundTripSubmission(fixable, "P-FIXABLE", trial, roundTripMissingVersion)); r.status != http.StatusUnauthorized {
		t.Fatalf("submit without a token: %d %s", r.status, r.body)
	}
	if r := e.do(http.MethodPost, e.apiURL+"/v1/reports", e.patientToken("P-GOOD-0"), roundTripSubmission(fixable, "P-FIXABLE", trial, roundTripMissingVersion)); r.status != http.StatusForbidden || r.code() != "PATIENT_MISMATCH" {
		t.Fatalf("submit with another patient's token: %d %s", r.status, r.body)
	}
	if r := e.do(http.MethodPost, e.apiURL+"/v1/reports", e.patientToken("P-FIXABLE"), roundTripSubmission(fixable, "P-FIXABLE", trial, roundTripMissingVersion)); r.status != http.StatusAccepted {
		t.Fatalf("submit report of the missing version: %d %s", r.status, r.body)
	}

	// Two poison records written straight to the topic: not JSON at all, and an envelope under another
	// patient's key.
	w := &kafka.Writer{Addr: kafka.TCP(e.brokers...), Topic: e.topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond, Transport: &kafka.Transport{MetadataTTL: time.Second}}
	defer w.Close()
	mismatched := stack.NewUUID()
	env, _ := json.Marshal(map[string]any{"schemaVersion": 1, "requestId": mismatched, "patientId": "P-OTHER", "trialId": trial,
		"questionnaireId": roundTripQuestionnaire, "questionnaireVersion": roundTripKnownVersion, "submittedAt": time.Now().Format(time.RFC3339),
		"answers": map[string]any{"note": roundTripAnswerMarker}, "receivedAt": time.Now().UTC().Format(time.RFC3339Nano)})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx,
		kafka.Message{Key: []byte("P-POISON"), Value: []byte("{not json " + roundTripAnswerMarker)},
		kafka.Message{Key: []byte("P-KEY"), Value: env, Headers: []kafka.Header{{Key: report.HeaderRequestID, Value: []byte(mismatched)}}},
	); err != nil {
		t.Fatalf("write poison records: %v", err)
	}

	// The good ones are stored; the other three are archived by dlq-worker with everything epro-mq knew.
	e.wait(60*time.Second, "the good reports stored", func() bool {
		return e.count("SELECT COUNT(*) FROM reports WHERE trial_id = ?", trial) == 2
	})
	// Each row records its sender: the subject of the token it came with (development tokens have no issuer).
	if n := e.count("SELECT COUNT(*) FROM reports WHERE trial_id = ? AND sender_subject = patient_id AND sender_issuer = ''", trial); n != 2 {
		t.Errorf("%d of 2 stored reports record their patient's token as the sender", n)
	}
	e.wait(90*time.Second, "three dead letters archived", func() bool { return e.count("SELECT COUNT(*) FROM dead_letters") == 3 })
	var permanent, notJSON, keyMismatch deadLetterRow
	for _, r := range e.rows() {
		switch {
		case r.requestID.String == fixable:
			permanent = r
		case r.requestID.String == mismatched:
			keyMismatch = r
		case !r.requestID.Valid:
			notJSON = r
		}
		if !r.originalTopic.Valid || r.originalTopic.String != e.topic || !r.originalPartition.Valid || !r.originalOffset.Valid ||
			!r.originalTimestamp.Valid || r.originalGroup.String != e.group || !r.first.Valid || !r.last.Valid ||
			r.errorMessage == "" || r.status != "new" || len(r.value) == 0 {
			t.Errorf("dead letter %d lacks metadata: %+v", r.id, r)
		}
		if strings.Contains(r.errorMessage, roundTripAnswerMarker) {
			t.Errorf("dead letter %d's error message quotes the payload", r.id)
		}
	}
	if permanent.id == 0 || notJSON.id == 0 || keyMismatch.id == 0 {
		t.Fatalf("dead letters = %+v", e.rows())
	}
	if permanent.errorClass != report.ErrorClassPermanent || permanent.attempts != 2 || permanent.patientID.String != "P-FIXABLE" ||
		permanent.trialID.String != trial || string(permanent.key) != "P-FIXABLE" || !strings.Contains(permanent.headers, report.HeaderRequestID) ||
		!strings.Contains(permanent.errorMessage, roundTripMissingVersion) {
		t.Errorf("permanent dead letter = %+v", permanent)
	}
	if notJSON.errorClass != report.ErrorClassPoison || notJSON.attempts != 1 || string(notJSON.value) != "{not json "+roundTripAnswerMarker {
		t.Errorf("poison dead letter = %+v", notJSON)
	}
	if keyMismatch.errorClass != report.ErrorClassPoison || keyMismatch.patientID.String != "P-OTHER" {
		t.Errorf("key-mismatch dead letter = %+v", keyMismatch)
	}

	// 401 and 403 where they belong.
	list := e.dlqURL + "/v1/dead-letters?trialId=" + trial
	e.expect("list without a token", e.do(http.MethodGet, list, "", nil), http.StatusUnauthorized, "UNAUTHORIZED")
	e.expect("list with a bad token", e.do(http.MethodGet, list, "not.a.token", nil), http.StatusUnauthorized, "")
	if r := e.do(http.MethodGet, list, reviewer, nil); r.status != http.StatusOK || strings.Contains(string(r.body), roundTripAnswerMarker) {
		t.Errorf("reviewer list = %d %s", r.status, r.body)
	}
	replayURL := fmt.Sprintf("%s/v1/dead-letters/%d/replay", e.dlqURL, permanent.id)
	e.expect("reviewer replay", e.do(http.MethodPost, replayURL, reviewer, nil), http.StatusForbidden, "FORBIDDEN")

	// Fix the catalogue: restart epro-mq with the missing version.
	e.mq.Stop(30 * time.Second)
	e.startMQ(roundTripKnownVersion, roundTripMissingVersion)

	var preview struct {
		ReportState string `json:"reportState"`
		Replayable  bool   `json:"replayable"`
	}
	r := e.do(http.MethodGet, fmt.Sprintf("%s/v1/dead-letters/%d/replay-preview", e.dlqURL, permanent.id), reviewer, nil)
	_ = json.Unmarshal(r.body, &preview)
	if r.status != http.StatusOK || preview.ReportState != "not_stored" || !preview.Replayable {
		t.Errorf("preview = %d %s", r.status, r.body)
	}

	// Replay the fixable one: exactly one stored report.
	if r := e.do(http.MethodPost, replayURL, operator, nil); r.status != http.StatusOK {
		t.Fatalf("replay = %d %s", r.status, r.body)
	}
	e.wait(60*time.Second, "the replayed report stored", func() bool {
		return e.count("SELECT COUNT(*) FROM reports WHERE request_id = ?", fixable) == 1
	})
	// Again: nothing changes, and the answer says why.
	e.expect("second replay", e.do(http.MethodPost, replayURL, operator, nil), http.StatusConflict, "ALREADY_REPLAYED")
	time.Sleep(2 * time.Second)
	e.expectCount(1, "report rows for the replayed request", "SELECT COUNT(*) FROM reports WHERE request_id = ?", fixable)
	e.expectCount(3, "report rows for the trial", "SELECT COUNT(*) FROM reports WHERE trial_id = ?", trial)
	e.expectCount(3, "dead letters after the replay (it must not fail again)", "SELECT COUNT(*) FROM dead_letters")
	e.expectCount(1, "replayed dead letters marked replayed", "SELECT COUNT(*) FROM dead_letters WHERE id = ? AND status = 'replayed'", permanent.id)
	e.expectCount(2, "replay audit rows (ok, already_replayed)", `SELECT COUNT(*) FROM dead_letter_audit WHERE dead_letter_id = ? AND action = 'replay'
		AND actor = 'alice' AND role = 'operator'`, permanent.id)

	// Discard a poison one: kept, marked, audited.
	discardURL := fmt.Sprintf("%s/v1/dead-letters/%d/discard", e.dlqURL, notJSON.id)
	e.expect("discard without a note", e.do(http.MethodPost, discardURL, operator, map[string]string{"reasonCode": "invalid_beyond_repair"}), http.StatusBadRequest, "")
	if r := e.do(http.MethodPost, discardURL, operator, map[string]string{"reasonCode": "invalid_beyond_repair",
		"note": "truncated by a broken app build"}); r.status != http.StatusOK {
		t.Fatalf("discard = %d %s", r.status, r.body)
	}
	e.expectCount(1, "discarded dead letters kept as discarded",
		"SELECT COUNT(*) FROM dead_letters WHERE id = ? AND status = 'discarded' AND discard_reason = 'invalid_beyond_repair'", notJSON.id)
	e.expectCount(1, "audit rows for the discard", `SELECT COUNT(*) FROM dead_letter_audit WHERE dead_letter_id = ? AND action = 'discard' AND actor = 'alice'
		AND outcome = 'ok' AND reason_code = 'invalid_beyond_repair' AND reason = 'truncated by a broken app build'`, notJSON.id)

	// Reveal is for operators, and audited.
	revealURL := fmt.Sprintf("%s/v1/dead-letters/%d?reveal=true", e.dlqURL, keyMismatch.id)
	e.expect("reviewer reveal", e.do(http.MethodGet, revealURL, reviewer, nil), http.StatusForbidden, "")
	r = e.do(http.MethodGet, revealURL, operator, nil)
	var detail struct {
		Payload string `json:"payload"`
	}
	_ = json.Unmarshal(r.body, &detail)
	payload, _ := base64.StdEncoding.DecodeString(detail.Payload)
	if r.status != http.StatusOK || !bytes.Equal(payload, env) {
		t.Errorf("reveal = %d, payload %d bytes", r.status, len(payload))
	}
	e.expectCount(1, "reveal audit rows", "SELECT COUNT(*) FROM dead_letter_audit WHERE dead_letter_id = ? AND action = 'reveal' AND actor = 'alice'", keyMismatch.id)
	if r := e.do(http.MethodGet, fmt.Sprintf("%s/v1/dead-letters/%d", e.dlqURL, keyMismatch.id), reviewer, nil); strings.Contains(string(r.body), roundTripAnswerMarker) {
		t.Error("get without reveal shows the payload")
	}

	// No service logged report content.
	for _, p := range e.st.Procs() {
		if b, _ := os.ReadFile(p.Log); bytes.Contains(b, []byte(roundTripAnswerMarker)) {
			t.Errorf("%s logged report content", p.Name)
		}
	}
}
