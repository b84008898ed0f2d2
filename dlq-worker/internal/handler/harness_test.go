package handler_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"
	"github.com/zeromicro/go-zero/core/conf"
	"github.com/zeromicro/go-zero/core/logx"
	"github.com/zeromicro/go-zero/rest"
	"github.com/zeromicro/go-zero/rest/httpx"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/common/reportdb/reportdbtest"
	"github.com/epro-intake/dlq-worker/internal/auth"
	"github.com/epro-intake/dlq-worker/internal/config"
	"github.com/epro-intake/dlq-worker/internal/handler"
	"github.com/epro-intake/dlq-worker/internal/middleware"
	"github.com/epro-intake/dlq-worker/internal/svc"
)

// logs captures everything the service logs during the tests, so tests can check that no report content
// reaches it.
var logs = &syncBuffer{}

// privateNote is a free-text answer in every report the tests dead-letter. It must never be logged, listed
// or shown without reveal.
const privateNote = "woke up twice, PRIVATE-NOTE-5521"

const testSecret = "test-secret-key-0123456789abcdef-xyz"

func TestMain(m *testing.M) {
	logx.MustSetup(logx.LogConf{Mode: "console", Encoding: "json", Level: "info", Stat: false})
	logx.SetWriter(logx.NewWriter(logs))
	httpx.SetErrorHandlerCtx(errcode.Handler)
	code := m.Run()
	if strings.Contains(logs.String(), privateNote) {
		os.Stderr.WriteString("FAIL: the service logged report content (" + privateNote + ")\n")
		code = 1
	}
	if code != 0 && testing.Verbose() {
		os.Stderr.WriteString(logs.String())
	}
	os.Exit(code)
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// worker is one dlq-worker wired exactly as main wires it, served by httptest, with its consumer and
// resolver running, on a topic pair and database of its own.
type worker struct {
	t        *testing.T
	url      string
	cfg      config.Config
	svc      *svc.ServiceContext
	db       *sql.DB
	brokers  []string
	source   string // the reports topic replays go to
	dlq      string
	dlqWrite *kafka.Writer
	// stopInstance stops the dlq-worker start started; nil when none runs.
	stopInstance func()
}

type workerOptions struct {
	// extraYAML is appended to the configuration.
	extraYAML string
	// bulkYAML is added to the Replay.Bulk block, each line indented by four spaces.
	bulkYAML string
	// allowMissing adds a topic that is allowed for replay but does not exist, to make produces fail.
	allowMissing string
	// produceAttempts overrides Replay.Producer.MaxAttempts.
	produceAttempts int
}

func newWorker(t *testing.T, o workerOptions) *worker {
	t.Helper()
	w := &worker{t: t, brokers: infratest.Kafka(t)}
	if o.produceAttempts == 0 {
		o.produceAttempts = 5
	}
	w.source = infratest.UniqueName(t, "reports")
	w.dlq = infratest.UniqueName(t, "dlq")
	infratest.CreateTopic(t, w.brokers, w.source, 2)
	infratest.CreateTopic(t, w.brokers, w.dlq, 2)
	dsn := infratest.MySQL(t)
	allowed := w.source
	if o.allowMissing != "" {
		allowed += ", " + o.allowMissing
	}
	yaml := fmt.Sprintf(`
Name: dlq-worker-test
Host: 127.0.0.1
Port: 0
Timeout: 10000
CpuThreshold: 0
DeadLetters:
  Brokers: [%s]
  Topic: %s
  Group: %s
  MaxWait: 100ms
Replay:
  Producer:
    Brokers: [%s]
    MaxAttempts: %d
  AllowedTopics: [%s]
  Timeout: 3s
  Bulk:
    CheckInterval: 100ms
%s
MySQL:
  DSN: %q
Auth:
  Secret: %s
Reconcile:
  Topic: %s
  Group: %s
  MaxWait: 100ms
%s`, strings.Join(w.brokers, ","), w.dlq, infratest.UniqueName(t, "group"), strings.Join(w.brokers, ","),
		o.produceAttempts, allowed, o.bulkYAML, dsn, testSecret, w.source, infratest.UniqueName(t, "mq"), o.extraYAML)
	if err := conf.LoadFromYamlBytes([]byte(yaml), &w.cfg); err != nil {
		t.Fatalf("config: %v", err)
	}
	w.start()
	t.Cleanup(w.stop)

	w.dlqWrite = &kafka.Writer{Addr: kafka.TCP(w.brokers...), Topic: w.dlq, Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond,
		// kafka-go's shared default transport caches metadata from before this test's topics existed.
		Transport: &kafka.Transport{MetadataTTL: time.Second}}
	t.Cleanup(func() { _ = w.dlqWrite.Close() })
	return w
}

// start builds a dlq-worker on w's configuration, database and topics exactly as main does, starts its
// consumer and resolver and serves its API at w.url.
func (w *worker) start() {
	w.t.Helper()
	sc, err := svc.NewServiceContext(context.Background(), w.cfg)
	if err != nil {
		w.t.Fatalf("service context: %v", err)
	}
	w.svc = sc
	w.db = sc.DB
	go sc.Consumer.Start()
	go sc.Resolver.Start()

	server := rest.MustNewServer(w.cfg.ServerConf(), handler.RunOptions()...)
	server.Use(middleware.AccessLog)
	handler.RegisterHandlers(server, sc)
	sl, err := rest.NewServerless(server)
	if err != nil {
		w.t.Fatalf("serverless: %v", err)
	}
	ts := httptest.NewServer(http.HandlerFunc(sl.Serve))
	w.url = ts.URL
	// In the ServiceGroup's order: the server first, then reconciliations, the resolver (jobs), the consumer.
	w.stopInstance = func() {
		ts.Close()
		sc.Reconciliations.Stop()
		sc.Resolver.Stop()
		sc.Consumer.Stop()
		_ = sc.Close()
	}
}

// stop stops the running dlq-worker as SIGTERM does; a second call does nothing.
func (w *worker) stop() {
	if w.stopInstance != nil {
		w.stopInstance()
		w.stopInstance = nil
	}
}

// restart stops the running dlq-worker and starts a new one on the same database and topics.
func (w *worker) restart() {
	w.t.Helper()
	w.stop()
	w.start()
}

func (w *worker) token(sub, role string) string {
	w.t.Helper()
	tok, err := auth.Mint([]byte(testSecret), "role", sub, role, time.Hour, time.Now())
	if err != nil {
		w.t.Fatal(err)
	}
	return tok
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
}

func (r response) errorCode(t *testing.T) string {
	t.Helper()
	var e errcode.Error
	if err := json.Unmarshal(r.body, &e); err != nil || e.Code == "" {
		t.Fatalf("body %q is not an errcode error: %v", r.body, err)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("error Content-Type = %q", ct)
	}
	return e.Code
}

func (w *worker) do(method, path, token string, body any) response {
	w.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			w.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, w.url+path, rd)
	if err != nil {
		w.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		w.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// envelope returns a report envelope as epro-api writes it.
func envelope(patient, trial, version string) (requestID string, value []byte) {
	requestID = uuid.NewString()
	value, _ = json.Marshal(map[string]any{
		"schemaVersion": 1, "requestId": requestID, "patientId": patient, "trialId": trial,
		"questionnaireId": "eq-5d-5l", "questionnaireVersion": version,
		"submittedAt": time.Now().Add(-time.Hour).Format(time.RFC3339),
		"answers":     map[string]any{"mobility": 2, "note": privateNote},
		"receivedAt":  time.Now().UTC().Format(time.RFC3339Nano),
	})
	return requestID, value
}

// deadLetter builds a record as epro-mq dead-letters one from the source topic.
func (w *worker) deadLetter(key string, value []byte, requestID, class string, extra ...kafka.Header) kafka.Message {
	now := time.Now().UTC()
	h := []kafka.Header{
		{Key: report.HeaderRequestID, Value: []byte(requestID)},
		{Key: report.HeaderSchemaVersion, Value: []byte("1")},
		{Key: report.HeaderTraceparent, Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")},
	}
	h = append(h, extra...)
	h = append(h,
		kafka.Header{Key: report.HeaderDLTOriginalTopic, Value: []byte(w.source)},
		kafka.Header{Key: report.HeaderDLTOriginalPartition, Value: []byte("1")},
		kafka.Header{Key: report.HeaderDLTOriginalOffset, Value: []byte("17")},
		kafka.Header{Key: report.HeaderDLTOriginalTimestamp, Value: []byte(now.Add(-time.Minute).Format(time.RFC3339Nano))},
		kafka.Header{Key: report.HeaderDLTOriginalConsumerGroup, Value: []byte("epro-mq")},
		kafka.Header{Key: report.HeaderDLTErrorClass, Value: []byte(class)},
		kafka.Header{Key: report.HeaderDLTErrorMessage, Value: []byte("questionnaire eq-5d-5l version 9 is not in the catalogue")},
		kafka.Header{Key: report.HeaderDLTAttempts, Value: []byte("5")},
		kafka.Header{Key: report.HeaderDLTFirstFailure, Value: []byte(now.Add(-30 * time.Second).Format(time.RFC3339Nano))},
		kafka.Header{Key: report.HeaderDLTLastFailure, Value: []byte(now.Format(time.RFC3339Nano))},
	)
	return kafka.Message{Key: []byte(key), Value: value, Headers: h}
}

func (w *worker) publish(msgs ...kafka.Message) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.dlqWrite.WriteMessages(ctx, msgs...); err != nil {
		w.t.Fatalf("write dead letters: %v", err)
	}
}

// seeded is one dead letter the tests put on the topic and found archived.
type seeded struct {
	id        uint64
	requestID string
	patient   string
}

// seed dead-letters n permanent failures for trial and waits until all are archived.
func (w *worker) seed(n int, trial, class string) []seeded {
	w.t.Helper()
	var out []seeded
	var msgs []kafka.Message
	for i := 0; i < n; i++ {
		patient := fmt.Sprintf("P-%s-%d", uuid.NewString()[:8], i)
		rid, val := envelope(patient, trial, "9")
		msgs = append(msgs, w.deadLetter(patient, val, rid, class))
		out = append(out, seeded{requestID: rid, patient: patient})
	}
	w.publish(msgs...)
	for i := range out {
		out[i].id = w.waitArchived(out[i].requestID)
	}
	return out
}

// waitArchived waits for the dead letter with requestID and returns its id.
func (w *worker) waitArchived(requestID string) uint64 {
	w.t.Helper()
	var id uint64
	waitFor(w.t, 30*time.Second, "dead letter "+requestID+" archived", func() bool {
		return w.db.QueryRow("SELECT id FROM dead_letters WHERE request_id = ? ORDER BY id LIMIT 1", requestID).Scan(&id) == nil
	})
	return id
}

func (w *worker) status(id uint64) string {
	w.t.Helper()
	var s string
	if err := w.db.QueryRow("SELECT status FROM dead_letters WHERE id = ?", id).Scan(&s); err != nil {
		w.t.Fatalf("status of %d: %v", id, err)
	}
	return s
}

type auditRow struct {
	actor, role, action, outcome, reasonCode, reason string
	jobID                                            sql.NullInt64
}

func (w *worker) audit(id uint64) []auditRow {
	w.t.Helper()
	rows, err := w.db.Query(`SELECT actor, role, action, outcome, COALESCE(reason_code, ''), COALESCE(reason, ''), job_id
		FROM dead_letter_audit WHERE dead_letter_id = ? ORDER BY id`, id)
	if err != nil {
		w.t.Fatal(err)
	}
	defer rows.Close()
	var out []auditRow
	for rows.Next() {
		var a auditRow
		if err := rows.Scan(&a.actor, &a.role, &a.action, &a.outcome, &a.reasonCode, &a.reason, &a.jobID); err != nil {
			w.t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

// sourceRecords reads everything on the source topic so far (all partitions), waiting up to timeout for at
// least min records.
func (w *worker) sourceRecords(min int, timeout time.Duration) []kafka.Message {
	w.t.Helper()
	var out []kafka.Message
	deadline := time.Now().Add(timeout)
	for p := 0; p < 2; p++ {
		conn, err := kafka.DialLeader(context.Background(), "tcp", w.brokers[0], w.source, p)
		if err != nil {
			w.t.Fatalf("dial: %v", err)
		}
		last, err := conn.ReadLastOffset()
		conn.Close()
		if err != nil {
			w.t.Fatal(err)
		}
		if last == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: w.brokers, Topic: w.source, Partition: p, MaxWait: 100 * time.Millisecond})
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		for off := int64(0); off < last; off++ {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				cancel()
				r.Close()
				w.t.Fatalf("read source partition %d: %v", p, err)
			}
			out = append(out, m)
		}
		cancel()
		r.Close()
	}
	if len(out) < min {
		if time.Now().After(deadline) {
			w.t.Fatalf("source topic has %d records, want at least %d", len(out), min)
		}
		time.Sleep(100 * time.Millisecond)
		return w.sourceRecords(min, time.Until(deadline))
	}
	return out
}

// createReports creates epro-mq's reports table with its real migrations (a second call finds nothing to do)
// and stores ids.
func (w *worker) createReports(ids ...string) {
	w.t.Helper()
	reportdbtest.Migrate(w.t, w.db)
	for _, id := range ids {
		reportdbtest.Insert(w.t, w.db, reportdbtest.Row{RequestID: id})
	}
}

func header(m kafka.Message, key string) (string, bool) {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

func idPath(id uint64, suffix string) string {
	return "/v1/dead-letters/" + strconv.FormatUint(id, 10) + suffix
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
