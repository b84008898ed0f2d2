package e2e

import (
	"github.com/epro-intake/e2e/internal/stack"

	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"github.com/segmentio/kafka-go"
	"gopkg.in/yaml.v3"

	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/common/report"
)

// The dead-letter round trip across the real binaries: epro-api takes reports, epro-mq stores them or
// dead-letters them, dlq-worker archives the dead letters in MySQL, and an operator replays or discards them
// through dlq-worker's API once the cause is fixed. Every helper here starts with dl, because other files of
// this package are written alongside.

const (
	dlQuestionnaire  = "eq-5d-5l"
	dlKnownVersion   = "2.1"
	dlMissingVersion = "3.0"
	dlAnswerMarker   = "DL-ROUNDTRIP-PRIVATE-ANSWER"
)

// dlEnv is one run of the three services on this test's topics, consumer groups and database.
type dlEnv struct {
	t       *testing.T
	root    string
	bin     string
	dir     string
	brokers []string
	dsn     string
	redis   string
	topic   string
	dlq     string
	mqGroup string
	secret  string
	apiURL  string
	dlqURL  string
	db      *sql.DB
	procs   map[string]*dlProc
}

type dlProc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func dlNewEnv(t *testing.T) *dlEnv {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	e := &dlEnv{t: t, root: root, dir: t.TempDir(), brokers: infratest.Kafka(t), dsn: infratest.MySQL(t),
		redis: infratest.Redis(t), procs: map[string]*dlProc{}}
	e.bin = filepath.Join(e.dir, "bin")
	dlBuild(t, root, e.bin, "epro-api", "epro-mq", "dlq-worker")
	e.topic = infratest.UniqueName(t, "reports")
	e.dlq = infratest.UniqueName(t, "dlq")
	e.mqGroup = infratest.UniqueName(t, "mq")
	infratest.CreateTopic(t, e.brokers, e.topic, 2)
	infratest.CreateTopic(t, e.brokers, e.dlq, 2)
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		t.Fatal(err)
	}
	e.secret = hex.EncodeToString(key[:])
	db, err := sql.Open("mysql", e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	e.db = db
	t.Cleanup(func() {
		for _, p := range e.procs {
			p.stop(5 * time.Second)
		}
		db.Close()
		if t.Failed() {
			for name, p := range e.procs {
				t.Logf("---- %s log (tail) ----\n%s", name, dlTail(p.log, 40))
			}
		}
	})
	return e
}

// dlBuild builds the services from their module directories, as a release would, without -race: they are
// the system under test here.
func dlBuild(t *testing.T, root, out string, modules ...string) {
	t.Helper()
	if err := stack.Build(context.Background(), root, out, modules...); err != nil {
		t.Fatal(err)
	}
}

// dlConfig writes service's etc/<service>.yaml with the environment references resolved for this test and
// the keys in set replaced ("A.B" paths), and returns its path.
func (e *dlEnv) dlConfig(service, name string, set map[string]any) string {
	e.t.Helper()
	raw, err := os.ReadFile(filepath.Join(e.root, service, "etc", service+".yaml"))
	if err != nil {
		e.t.Fatal(err)
	}
	vars := map[string]string{
		"EPRO_KAFKA_BROKERS": strings.Join(e.brokers, ","), "EPRO_MYSQL_DSN": e.dsn, "EPRO_REDIS_ADDR": e.redis,
		"EPRO_REDIS_PASSWORD": "", "EPRO_DLQ_JWT_KEY": e.secret, "EPRO_API_PORT": "0", "EPRO_DLQ_PORT": "0",
	}
	expanded := os.Expand(string(raw), func(k string) string {
		v, ok := vars[k]
		if !ok {
			e.t.Fatalf("%s reads ${%s}, which this test does not know", service, k)
		}
		return v
	})
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(expanded), &doc); err != nil {
		e.t.Fatalf("parse %s config: %v", service, err)
	}
	for path, v := range set {
		keys := strings.Split(path, ".")
		m := doc
		for _, k := range keys[:len(keys)-1] {
			next, ok := m[k].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[k] = next
			}
			m = next
		}
		m[keys[len(keys)-1]] = v
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		e.t.Fatal(err)
	}
	path := filepath.Join(e.dir, name+".yaml")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		e.t.Fatal(err)
	}
	return path
}

func (e *dlEnv) dlStart(name, binary string, args ...string) *dlProc {
	e.t.Helper()
	logPath := filepath.Join(e.dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		e.t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(e.bin, binary), args...)
	cmd.Dir = e.dir
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("start %s: %v", name, err)
	}
	p := &dlProc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	e.procs[name] = p
	return p
}

// stop sends SIGTERM and kills the process if it has not ended within limit.
func (p *dlProc) stop(limit time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(limit):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func dlFreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func dlTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (e *dlEnv) dlWait(timeout time.Duration, what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		for _, p := range e.procs {
			select {
			case <-p.done:
				e.t.Fatalf("%s exited while waiting for %s:\n%s", p.name, what, dlTail(p.log, 30))
			default:
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *dlEnv) dlStartMQ(versions ...string) {
	e.t.Helper()
	var catalogue []any
	for _, v := range versions {
		catalogue = append(catalogue, dlQuestionnaire+"@"+v)
	}
	cfg := e.dlConfig("epro-mq", "epro-mq", map[string]any{
		"Name":                 "epro-mq-" + e.mqGroup,
		"Reports.Topic":        e.topic,
		"Reports.Group":        e.mqGroup,
		"DeadLetter.Topic":     e.dlq,
		"Questionnaires":       catalogue,
		"Retry.MaxAttempts":    2,
		"Retry.InitialBackoff": "50ms",
		"Retry.MaxBackoff":     "100ms",
	})
	e.dlStart("epro-mq", "epro-mq", "-f", cfg)
}

type dlResp struct {
	status int
	body   []byte
}

func (r dlResp) code() string {
	var e struct{ Code string }
	_ = json.Unmarshal(r.body, &e)
	return e.Code
}

func (e *dlEnv) dlDo(method, url, token string, body any) dlResp {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return dlResp{status: resp.StatusCode, body: b}
}

func (e *dlEnv) dlUp(url string) bool {
	resp, err := (&http.Client{Timeout: time.Second}).Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// dlToken mints a token with the dlq-worker binary's own token command, as an operator would.
func (e *dlEnv) dlToken(cfg, sub, role string) string {
	e.t.Helper()
	out, err := exec.Command(filepath.Join(e.bin, "dlq-worker"), "token", "-f", cfg, "-sub", sub, "-role", role, "-ttl", "1h").Output()
	if err != nil {
		e.t.Fatalf("dlq-worker token: %v", err)
	}
	return strings.TrimSpace(string(out))
}

func dlUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func dlSubmission(requestID, patient, trial, version string) map[string]any {
	return map[string]any{
		"requestId": requestID, "patientId": patient, "trialId": trial,
		"questionnaireId": dlQuestionnaire, "questionnaireVersion": version,
		"submittedAt": time.Now().Add(-time.Hour).Format(time.RFC3339),
		"answers":     map[string]any{"mobility": 2, "note": dlAnswerMarker},
	}
}

func (e *dlEnv) dlCount(query string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.db.QueryRow(query, args...).Scan(&n); err != nil {
		return -1 // the table may not exist yet
	}
	return n
}

type dlRow struct {
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

func (e *dlEnv) dlRows() []dlRow {
	e.t.Helper()
	rows, err := e.db.Query(`SELECT id, original_topic, original_consumer_group, original_partition, original_offset,
		original_timestamp, first_failure_at, last_failure_at, error_class, error_message, status, attempts,
		request_id, patient_id, trial_id, headers, record_value, record_key FROM dead_letters ORDER BY id`)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []dlRow
	for rows.Next() {
		var r dlRow
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
	if testing.Short() {
		t.Skip("builds and runs three services")
	}
	e := dlNewEnv(t)

	// epro-mq knows only version 2.1 of the questionnaire; 3.0 will fail permanently until it is added.
	e.dlStartMQ(dlKnownVersion)
	apiPort := dlFreePort(t)
	apiCfg := e.dlConfig("epro-api", "epro-api", map[string]any{"Port": apiPort, "Topic": e.topic})
	e.dlStart("epro-api", "epro-api", "-f", apiCfg)
	e.apiURL = "http://127.0.0.1:" + strconv.Itoa(apiPort)
	dlqPort := dlFreePort(t)
	dlqCfg := e.dlConfig("dlq-worker", "dlq-worker", map[string]any{
		"Port":                      dlqPort,
		"DeadLetters.Topic":         e.dlq,
		"DeadLetters.Group":         infratest.UniqueName(t, "dlqw"),
		"DeadLetters.MaxWait":       "100ms",
		"Replay.AllowedTopics":      []any{e.topic},
		"Replay.Bulk.CheckInterval": "200ms",
	})
	e.dlStart("dlq-worker", "dlq-worker", "-f", dlqCfg)
	e.dlqURL = "http://127.0.0.1:" + strconv.Itoa(dlqPort)
	e.dlWait(60*time.Second, "epro-api ready", func() bool { return e.dlUp(e.apiURL + "/readyz") })
	e.dlWait(60*time.Second, "dlq-worker up", func() bool { return e.dlUp(e.dlqURL + "/healthz") })

	operator := e.dlToken(dlqCfg, "alice", "operator")
	reviewer := e.dlToken(dlqCfg, "rita", "reviewer")
	trial := "TRIAL-DL-" + dlUUID()[:8]

	// Two good reports and one of the missing version, through the API.
	good := []string{dlUUID(), dlUUID()}
	for i, id := range good {
		r := e.dlDo(http.MethodPost, e.apiURL+"/v1/reports", "", dlSubmission(id, fmt.Sprintf("P-GOOD-%d", i), trial, dlKnownVersion))
		if r.status != http.StatusAccepted {
			t.Fatalf("submit good report: %d %s", r.status, r.body)
		}
	}
	fixable := dlUUID()
	if r := e.dlDo(http.MethodPost, e.apiURL+"/v1/reports", "", dlSubmission(fixable, "P-FIXABLE", trial, dlMissingVersion)); r.status != http.StatusAccepted {
		t.Fatalf("submit report of the missing version: %d %s", r.status, r.body)
	}

	// Two poison records written straight to the topic: not JSON at all, and an envelope under another
	// patient's key.
	w := &kafka.Writer{Addr: kafka.TCP(e.brokers...), Topic: e.topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond, Transport: &kafka.Transport{MetadataTTL: time.Second}}
	defer w.Close()
	mismatched := dlUUID()
	env, _ := json.Marshal(map[string]any{"schemaVersion": 1, "requestId": mismatched, "patientId": "P-OTHER", "trialId": trial,
		"questionnaireId": dlQuestionnaire, "questionnaireVersion": dlKnownVersion, "submittedAt": time.Now().Format(time.RFC3339),
		"answers": map[string]any{"note": dlAnswerMarker}, "receivedAt": time.Now().UTC().Format(time.RFC3339Nano)})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx,
		kafka.Message{Key: []byte("P-POISON"), Value: []byte("{not json " + dlAnswerMarker)},
		kafka.Message{Key: []byte("P-KEY"), Value: env, Headers: []kafka.Header{{Key: report.HeaderRequestID, Value: []byte(mismatched)}}},
	); err != nil {
		t.Fatalf("write poison records: %v", err)
	}

	// The good ones are stored; the other three are archived by dlq-worker with everything epro-mq knew.
	e.dlWait(60*time.Second, "the good reports stored", func() bool {
		return e.dlCount("SELECT COUNT(*) FROM reports WHERE trial_id = ?", trial) == 2
	})
	e.dlWait(90*time.Second, "three dead letters archived", func() bool { return e.dlCount("SELECT COUNT(*) FROM dead_letters") == 3 })
	var permanent, notJSON, keyMismatch dlRow
	for _, r := range e.dlRows() {
		switch {
		case r.requestID.String == fixable:
			permanent = r
		case r.requestID.String == mismatched:
			keyMismatch = r
		case !r.requestID.Valid:
			notJSON = r
		}
		if !r.originalTopic.Valid || r.originalTopic.String != e.topic || !r.originalPartition.Valid || !r.originalOffset.Valid ||
			!r.originalTimestamp.Valid || r.originalGroup.String != e.mqGroup || !r.first.Valid || !r.last.Valid ||
			r.errorMessage == "" || r.status != "new" || len(r.value) == 0 {
			t.Errorf("dead letter %d lacks metadata: %+v", r.id, r)
		}
		if strings.Contains(r.errorMessage, dlAnswerMarker) {
			t.Errorf("dead letter %d's error message quotes the payload", r.id)
		}
	}
	if permanent.id == 0 || notJSON.id == 0 || keyMismatch.id == 0 {
		t.Fatalf("dead letters = %+v", e.dlRows())
	}
	if permanent.errorClass != report.ErrorClassPermanent || permanent.attempts != 2 || permanent.patientID.String != "P-FIXABLE" ||
		permanent.trialID.String != trial || string(permanent.key) != "P-FIXABLE" || !strings.Contains(permanent.headers, report.HeaderRequestID) ||
		!strings.Contains(permanent.errorMessage, dlMissingVersion) {
		t.Errorf("permanent dead letter = %+v", permanent)
	}
	if notJSON.errorClass != report.ErrorClassPoison || notJSON.attempts != 1 || string(notJSON.value) != "{not json "+dlAnswerMarker {
		t.Errorf("poison dead letter = %+v", notJSON)
	}
	if keyMismatch.errorClass != report.ErrorClassPoison || keyMismatch.patientID.String != "P-OTHER" {
		t.Errorf("key-mismatch dead letter = %+v", keyMismatch)
	}

	// 401 and 403 where they belong.
	list := e.dlqURL + "/v1/dead-letters?trialId=" + trial
	if r := e.dlDo(http.MethodGet, list, "", nil); r.status != http.StatusUnauthorized || r.code() != "UNAUTHORIZED" {
		t.Errorf("list without a token = %d %s", r.status, r.body)
	}
	if r := e.dlDo(http.MethodGet, list, "not.a.token", nil); r.status != http.StatusUnauthorized {
		t.Errorf("list with a bad token = %d", r.status)
	}
	if r := e.dlDo(http.MethodGet, list, reviewer, nil); r.status != http.StatusOK || strings.Contains(string(r.body), dlAnswerMarker) {
		t.Errorf("reviewer list = %d %s", r.status, r.body)
	}
	replayURL := fmt.Sprintf("%s/v1/dead-letters/%d/replay", e.dlqURL, permanent.id)
	if r := e.dlDo(http.MethodPost, replayURL, reviewer, nil); r.status != http.StatusForbidden || r.code() != "FORBIDDEN" {
		t.Errorf("reviewer replay = %d %s", r.status, r.body)
	}

	// Fix the catalogue: restart epro-mq with the missing version.
	e.procs["epro-mq"].stop(30 * time.Second)
	e.dlStartMQ(dlKnownVersion, dlMissingVersion)

	var preview struct {
		ReportState string `json:"reportState"`
		Replayable  bool   `json:"replayable"`
	}
	r := e.dlDo(http.MethodGet, fmt.Sprintf("%s/v1/dead-letters/%d/replay-preview", e.dlqURL, permanent.id), reviewer, nil)
	_ = json.Unmarshal(r.body, &preview)
	if r.status != http.StatusOK || preview.ReportState != "not_stored" || !preview.Replayable {
		t.Errorf("preview = %d %s", r.status, r.body)
	}

	// Replay the fixable one: exactly one stored report.
	if r := e.dlDo(http.MethodPost, replayURL, operator, nil); r.status != http.StatusOK {
		t.Fatalf("replay = %d %s", r.status, r.body)
	}
	e.dlWait(60*time.Second, "the replayed report stored", func() bool {
		return e.dlCount("SELECT COUNT(*) FROM reports WHERE request_id = ?", fixable) == 1
	})
	// Again: nothing changes, and the answer says why.
	r = e.dlDo(http.MethodPost, replayURL, operator, nil)
	if r.status != http.StatusConflict || r.code() != "ALREADY_REPLAYED" {
		t.Errorf("second replay = %d %s", r.status, r.body)
	}
	time.Sleep(2 * time.Second)
	if n := e.dlCount("SELECT COUNT(*) FROM reports WHERE request_id = ?", fixable); n != 1 {
		t.Errorf("%d report rows for the replayed request, want 1", n)
	}
	if n := e.dlCount("SELECT COUNT(*) FROM reports WHERE trial_id = ?", trial); n != 3 {
		t.Errorf("%d report rows for the trial, want 3", n)
	}
	if n := e.dlCount("SELECT COUNT(*) FROM dead_letters"); n != 3 {
		t.Errorf("%d dead letters after the replay, want 3 (it must not fail again)", n)
	}
	if n := e.dlCount("SELECT COUNT(*) FROM dead_letters WHERE id = ? AND status = 'replayed'", permanent.id); n != 1 {
		t.Error("the replayed dead letter is not marked replayed")
	}
	if n := e.dlCount(`SELECT COUNT(*) FROM dead_letter_audit WHERE dead_letter_id = ? AND action = 'replay' AND actor = 'alice'
		AND role = 'operator'`, permanent.id); n != 2 {
		t.Errorf("%d replay audit rows, want 2 (ok, already_replayed)", n)
	}

	// Discard a poison one: kept, marked, audited.
	discardURL := fmt.Sprintf("%s/v1/dead-letters/%d/discard", e.dlqURL, notJSON.id)
	if r := e.dlDo(http.MethodPost, discardURL, operator, map[string]string{"reasonCode": "invalid_beyond_repair"}); r.status != http.StatusBadRequest {
		t.Errorf("discard without a note = %d", r.status)
	}
	if r := e.dlDo(http.MethodPost, discardURL, operator, map[string]string{"reasonCode": "invalid_beyond_repair",
		"note": "truncated by a broken app build"}); r.status != http.StatusOK {
		t.Fatalf("discard = %d %s", r.status, r.body)
	}
	if n := e.dlCount("SELECT COUNT(*) FROM dead_letters WHERE id = ? AND status = 'discarded' AND discard_reason = 'invalid_beyond_repair'", notJSON.id); n != 1 {
		t.Error("the discarded dead letter is not kept as discarded")
	}
	if n := e.dlCount(`SELECT COUNT(*) FROM dead_letter_audit WHERE dead_letter_id = ? AND action = 'discard' AND actor = 'alice'
		AND outcome = 'ok' AND reason_code = 'invalid_beyond_repair' AND reason = 'truncated by a broken app build'`, notJSON.id); n != 1 {
		t.Error("no audit row for the discard")
	}

	// Reveal is for operators, and audited.
	revealURL := fmt.Sprintf("%s/v1/dead-letters/%d?reveal=true", e.dlqURL, keyMismatch.id)
	if r := e.dlDo(http.MethodGet, revealURL, reviewer, nil); r.status != http.StatusForbidden {
		t.Errorf("reviewer reveal = %d", r.status)
	}
	r = e.dlDo(http.MethodGet, revealURL, operator, nil)
	var detail struct {
		Payload string `json:"payload"`
	}
	_ = json.Unmarshal(r.body, &detail)
	payload, _ := base64.StdEncoding.DecodeString(detail.Payload)
	if r.status != http.StatusOK || !bytes.Equal(payload, env) {
		t.Errorf("reveal = %d, payload %d bytes", r.status, len(payload))
	}
	if n := e.dlCount("SELECT COUNT(*) FROM dead_letter_audit WHERE dead_letter_id = ? AND action = 'reveal' AND actor = 'alice'", keyMismatch.id); n != 1 {
		t.Errorf("%d reveal audit rows, want 1", n)
	}
	if r := e.dlDo(http.MethodGet, fmt.Sprintf("%s/v1/dead-letters/%d", e.dlqURL, keyMismatch.id), reviewer, nil); strings.Contains(string(r.body), dlAnswerMarker) {
		t.Error("get without reveal shows the payload")
	}

	// No service logged report content.
	for name, p := range e.procs {
		if b, _ := os.ReadFile(p.log); bytes.Contains(b, []byte(dlAnswerMarker)) {
			t.Errorf("%s logged report content", name)
		}
	}
}
