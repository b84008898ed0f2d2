package handler_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"github.com/zeromicro/go-zero/core/conf"
	"github.com/zeromicro/go-zero/core/logx"
	"github.com/zeromicro/go-zero/rest"
	"github.com/zeromicro/go-zero/rest/httpx"

	"github.com/epro-intake/common/errcode"
	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/common/status"
	"github.com/epro-intake/epro-api/internal/auth"
	"github.com/epro-intake/epro-api/internal/config"
	"github.com/epro-intake/epro-api/internal/handler"
	"github.com/epro-intake/epro-api/internal/middleware"
	"github.com/epro-intake/epro-api/internal/ratelimit"
	"github.com/epro-intake/epro-api/internal/svc"
)

// logs captures everything the service logs during the tests, so tests can check that no report content
// reaches it.
var logs = &syncBuffer{}

func TestMain(m *testing.M) {
	logx.MustSetup(logx.LogConf{Mode: "console", Encoding: "json", Level: "info", Stat: false})
	logx.SetWriter(logx.NewWriter(logs))
	httpx.SetErrorHandlerCtx(errcode.Handler)
	code := m.Run()
	// Every report the tests send carries privateNote; whatever the outcome, no log line may contain it.
	if strings.Contains(logs.String(), privateNote) {
		os.Stderr.WriteString("FAIL: the service logged report content (" + privateNote + ")\n")
		code = 1
	}
	// Nor any token a test sent, accepted or refused.
	if tok, n := sentTokens.foundIn(logs.String()); tok != "" {
		os.Stderr.WriteString("FAIL: the service logged a bearer token (one of " + strconv.Itoa(n) + " sent)\n")
		code = 1
	} else if n == 0 && code == 0 && !testing.Short() && flag.Lookup("test.run").Value.String() == "" {
		os.Stderr.WriteString("FAIL: no test sent a bearer token, so the log check above checked nothing\n")
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

// tokenSet records every bearer token the tests send, for the log check in TestMain.
type tokenSet struct {
	mu     sync.Mutex
	tokens map[string]bool
}

var sentTokens = &tokenSet{tokens: map[string]bool{}}

func (s *tokenSet) add(tok string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[tok] = true
	return tok
}

// foundIn returns a recorded token that text contains (or ""), and how many tokens were recorded. Each is
// also looked for by its signature alone, which a log line could hold without the rest.
func (s *tokenSet) foundIn(text string) (string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for tok := range s.tokens {
		sig := tok[strings.LastIndex(tok, ".")+1:]
		if strings.Contains(text, tok) || len(sig) >= 16 && strings.Contains(text, sig) {
			return tok, len(s.tokens)
		}
	}
	return "", len(s.tokens)
}

// testKey signs the development tokens of the tests.
const testKey = "test-key-0123456789abcdef0123456789"

// devAuth is the Auth block of every test API unless apiOptions.authYAML replaces it.
const devAuth = "Auth:\n  Secret: " + testKey + "\n"

// api is one epro-api wired exactly as main wires it, served by httptest.
type api struct {
	t       *testing.T
	url     string
	cfg     config.Config
	svc     *svc.ServiceContext
	brokers []string
	topic   string
	rdb     *redis.Client
}

type apiOptions struct {
	partitions int
	// brokers overrides the Kafka brokers (an unreachable address for outage tests, a broker of the test's
	// own); the topic is created on them only when partitions is set.
	brokers []string
	// mysqlDSN overrides the MySQL DSN; "" means a fresh infratest database.
	mysqlDSN string
	// redisAddr overrides the Redis address.
	redisAddr string
	// extraYAML is appended to the configuration.
	extraYAML string
	// rateLimitYAML is appended inside the RateLimit block, each line indented by two spaces.
	rateLimitYAML string
	// producer wraps the real producer.
	producer func(svc.Producer) svc.Producer
	// authYAML replaces the Auth block (devAuth: hs256 with testKey).
	authYAML string
}

func newAPI(t *testing.T, o apiOptions) *api {
	t.Helper()
	a := &api{t: t}
	if o.brokers != nil {
		a.brokers = o.brokers
		a.topic = infratest.UniqueName(t, "epro_reports")
		if o.partitions > 0 {
			infratest.CreateTopic(t, a.brokers, a.topic, o.partitions)
		}
	} else {
		a.brokers = infratest.Kafka(t)
		a.topic = infratest.UniqueName(t, "epro_reports")
		if o.partitions == 0 {
			o.partitions = 1
		}
		infratest.CreateTopic(t, a.brokers, a.topic, o.partitions)
	}
	if o.mysqlDSN == "" {
		o.mysqlDSN = infratest.MySQL(t)
	}
	if o.redisAddr == "" {
		o.redisAddr = infratest.Redis(t)
	}

	if o.authYAML == "" {
		o.authYAML = devAuth
	}
	yaml := fmt.Sprintf(`
Name: epro-api-test
Host: 127.0.0.1
Port: 0
Mode: test
CpuThreshold: 0
Kafka:
  Brokers: [%s]
Topic: %s
MySQL:
  DSN: %q
Redis:
  Addr: %s
Ready:
  Interval: 100ms
  MaxAge: 1s
%s
%s`, strings.Join(a.brokers, ","), a.topic, o.mysqlDSN, o.redisAddr, o.authYAML, o.extraYAML)
	// The Redis is shared by every test of the run, and tests reuse patient ids: each gets its own buckets.
	yaml += "\nRateLimit:\n  KeyPrefix: " + infratest.UniqueName(t, "ratelimit") + "\n" + o.rateLimitYAML
	if err := conf.LoadFromYamlBytes([]byte(yaml), &a.cfg); err != nil {
		t.Fatalf("config: %v", err)
	}

	sc, err := svc.NewServiceContext(a.cfg)
	if err != nil {
		t.Fatalf("service context: %v", err)
	}
	if o.producer != nil {
		sc.Producer = o.producer(sc.Producer)
	}
	a.svc = sc
	go sc.Readiness.Start()
	t.Cleanup(func() {
		sc.Readiness.Stop()
		sc.Readiness.Wait()
		_ = sc.Close()
	})

	server := rest.MustNewServer(a.cfg.ServerConf(), handler.RunOptions()...)
	server.Use(middleware.AccessLog)
	server.Use(ratelimit.ClientMiddleware(a.cfg.RateLimit.ForwardedForHops))
	handler.RegisterHandlers(server, sc)
	sl, err := rest.NewServerless(server)
	if err != nil {
		t.Fatalf("serverless: %v", err)
	}
	ts := httptest.NewUnstartedServer(http.HandlerFunc(sl.Serve))
	for _, opt := range handler.StartOptions(sc) {
		opt(ts.Config)
	}
	ts.Start()
	t.Cleanup(ts.Close)
	a.url = ts.URL

	a.rdb = redis.NewClient(&redis.Options{Addr: o.redisAddr})
	t.Cleanup(func() { _ = a.rdb.Close() })
	return a
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) errorBody(t *testing.T) errcode.Error {
	t.Helper()
	var e errcode.Error
	if err := json.Unmarshal(r.body, &e); err != nil || e.Code == "" {
		t.Fatalf("body %q is not an errcode error: %v", r.body, err)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("error Content-Type = %q", ct)
	}
	return e
}

func (a *api) do(req *http.Request) response {
	a.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatalf("read response: %v", err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: body}
}

// token returns a development token for patient (see auth.Mint), recorded for the log check.
func (a *api) token(patient string) string {
	a.t.Helper()
	tok, err := auth.Mint(a.cfg.Auth, patient, "", time.Hour, time.Now())
	if err != nil {
		a.t.Fatalf("mint a token for %s: %v", patient, err)
	}
	return sentTokens.add(tok)
}

// authorize makes req carry patient's token.
func (a *api) authorize(req *http.Request, patient string) *http.Request {
	a.t.Helper()
	req.Header.Set("Authorization", "Bearer "+a.token(patient))
	return req
}

// post sends body as the patient whose report it is, as the patient's app would: the patientId of the
// report, or of the batch's first report (anyPatient when the body has none). Tests of authentication build
// their requests themselves.
func (a *api) post(path, contentType string, body []byte) response {
	a.t.Helper()
	return a.postAs(patientOf(body), path, contentType, body)
}

// postAs sends body with patient's token.
func (a *api) postAs(patient, path, contentType string, body []byte) response {
	a.t.Helper()
	req, err := http.NewRequest(http.MethodPost, a.url+path, bytes.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return a.do(a.authorize(req, patient))
}

// get reads path as anyPatient, the patient of reportdbtest's rows and of receipts the tests write.
func (a *api) get(path string) response {
	a.t.Helper()
	return a.getAs(anyPatient, path)
}

// getAs reads path with patient's token.
func (a *api) getAs(patient, path string) response {
	a.t.Helper()
	req, err := http.NewRequest(http.MethodGet, a.url+path, nil)
	if err != nil {
		a.t.Fatal(err)
	}
	return a.do(a.authorize(req, patient))
}

// anyPatient is the patient of requests whose patient does not matter; reportdbtest's rows belong to it.
const anyPatient = "patient-1"

// patientOf is the patientId of a report, or of the first report of a batch that has one; anyPatient if none.
func patientOf(body []byte) string {
	var one struct {
		PatientID any               `json:"patientId"`
		Reports   []json.RawMessage `json:"reports"`
	}
	if json.Unmarshal(body, &one) != nil {
		return anyPatient
	}
	if p, ok := one.PatientID.(string); ok && p != "" {
		return p
	}
	for _, item := range one.Reports {
		var r struct {
			PatientID any `json:"patientId"`
		}
		if json.Unmarshal(item, &r) == nil {
			if p, ok := r.PatientID.(string); ok && p != "" {
				return p
			}
		}
	}
	return anyPatient
}

// accept caches id as accepted for patient, with its receipt, as the API does after a 202.
func (a *api) accept(id, patient, value string) {
	a.t.Helper()
	receipt := status.Receipt{PatientID: patient, ReceivedAt: time.Now().UTC()}
	if err := a.rdb.Set(a.t.Context(), status.ReceiptKey(id), receipt.Marshal(), time.Minute).Err(); err != nil {
		a.t.Fatal(err)
	}
	if err := a.rdb.Set(a.t.Context(), status.Key(id), value, time.Minute).Err(); err != nil {
		a.t.Fatal(err)
	}
}

// privateNote is a free-text answer in every report the tests build.
const privateNote = "slept badly, PRIVATE-NOTE-93"

// validReport returns a report that passes validation, as a map so that tests can break one field.
func validReport(patientID string) map[string]any {
	return map[string]any{
		"requestId":            uuid.NewString(),
		"patientId":            patientID,
		"trialId":              "TRIAL-7",
		"questionnaireId":      "eq-5d-5l",
		"questionnaireVersion": "2.1",
		"submittedAt":          time.Now().Add(-time.Hour).In(time.FixedZone("CET", 3600)).Format(time.RFC3339),
		"answers":              map[string]any{"mobility": 2, "note": privateNote},
		"deviceId":             "device-1",
		"appVersion":           "3.4.1",
		"locale":               "de-DE",
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readMessages reads n records from one partition of the API's topic, failing after timeout.
func (a *api) readMessages(partition, n int, timeout time.Duration) []kafka.Message {
	a.t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: a.brokers, Topic: a.topic, Partition: partition,
		MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 100 * time.Millisecond,
	})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var msgs []kafka.Message
	for len(msgs) < n {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			a.t.Fatalf("read partition %d: got %d of %d records: %v", partition, len(msgs), n, err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// recordCount returns how many records the API's topic holds, over all partitions.
func (a *api) recordCount() int64 {
	a.t.Helper()
	conn, err := kafka.Dial("tcp", a.brokers[0])
	if err != nil {
		a.t.Fatalf("dial kafka: %v", err)
	}
	defer conn.Close()
	parts, err := conn.ReadPartitions(a.topic)
	if err != nil {
		a.t.Fatalf("partitions: %v", err)
	}
	// Its own Transport, so no metadata cached before the topic existed is used; and retried, because a
	// topic created moments ago can still answer NOT_LEADER for a partition whose leader metadata shows.
	client := &kafka.Client{Addr: kafka.TCP(a.brokers...), Timeout: 10 * time.Second, Transport: &kafka.Transport{}}
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for _, p := range parts {
		req.Topics[a.topic] = append(req.Topics[a.topic], kafka.LastOffsetOf(p.ID))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.ListOffsets(context.Background(), req)
		var total int64
		if err != nil {
			resp = &kafka.ListOffsetsResponse{}
		}
		for _, po := range resp.Topics[a.topic] {
			if po.Error != nil && err == nil {
				err = fmt.Errorf("partition %d: %w", po.Partition, po.Error)
			}
			total += po.LastOffset
		}
		if err == nil {
			return total
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("list offsets: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
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

type svcProducer = svc.Producer

// slowProducer delays every Send, as a broker that stopped answering would.
type slowProducer struct {
	svcProducer
	delay time.Duration
}

func (p *slowProducer) Send(ctx context.Context, msgs ...kafka.Message) error {
	select {
	case <-time.After(p.delay):
	case <-ctx.Done():
		return ctx.Err()
	}
	return p.svcProducer.Send(ctx, msgs...)
}

func realBrokers(t *testing.T) []string { return infratest.Kafka(t) }

// javaPartition is the partition Java's default partitioner picks for key, through kafka-go's Murmur2Balancer
// (which TestSubmitReportPartitionsByPatientLikeJava checks against a Java vector).
func javaPartition(key string, partitions int) int {
	ids := make([]int, partitions)
	for i := range ids {
		ids[i] = i
	}
	return (&kafka.Murmur2Balancer{Consistent: true}).Balance(kafka.Message{Key: []byte(key)}, ids...)
}

func toUpper(s string) string { return strings.ToUpper(s) }
func toLower(s string) string { return strings.ToLower(s) }

// cachedStatus waits briefly for the status cache of id, which the API writes after answering.
func cachedStatus(t *testing.T, rdb *redis.Client, id string) string {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		v := rdb.Get(t.Context(), status.Key(id)).Val()
		if v != "" || time.Now().After(deadline) {
			return v
		}
		time.Sleep(10 * time.Millisecond)
	}
}
