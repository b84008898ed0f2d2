//go:build linux

// The pipeline tests need Pdeathsig, which only Linux has: without it a test binary killed by go test's
// -timeout would leave epro-mq replicas running and consuming forever on the CI machine.

package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/e2e/internal/stack"
)

// ---------------------------------------------------------------------------
// The stack
// ---------------------------------------------------------------------------

var (
	buildOnce sync.Once
	buildRoot string // repository root: the services' working directory
	buildDir  string // the built services, shared by every test of this process
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// newStack builds the services once per test process and gives t a stack of its own on the test
// infrastructure (EPRO_TEST_* or embedded stand-ins), its configs and logs in a directory of its own. The
// services are killed when t ends; their logs stay when it failed.
func newStack(t *testing.T) *stack.Stack {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the services; skipped with -short")
	}
	buildOnce.Do(func() {
		if buildRoot, buildErr = stack.Root(context.Background()); buildErr != nil {
			return
		}
		if buildDir, buildErr = os.MkdirTemp("", "epro-e2e-bin-"); buildErr != nil {
			return
		}
		start := time.Now()
		if buildErr = stack.Build(context.Background(), buildRoot, buildDir, stack.Services...); buildErr == nil {
			t.Logf("built %v in %s", stack.Services, time.Since(start).Round(time.Millisecond))
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	// The servers named by EPRO_TEST_*, or embedded stand-ins shared by the test binary; with
	// EPRO_TEST_REQUIRE_REAL=1 a missing server fails the test (common/infratest). The database is the
	// test's own and is dropped when it ends.
	inf := &stack.Infra{Brokers: infratest.Kafka(t), DSN: infratest.MySQL(t), RedisAddr: infratest.Redis(t)}
	dir, err := os.MkdirTemp("", "epro-e2e-"+infratest.UniqueName(t, "")+"-")
	if err != nil {
		t.Fatal(err)
	}
	// EPRO_REDIS_PASSWORD is set empty so that one from the developer's shell cannot reach the test Redis.
	st := &stack.Stack{Root: buildRoot, Bin: buildDir, Dir: dir, Infra: inf,
		Env: append(append(os.Environ(), inf.Env()...), "EPRO_REDIS_PASSWORD=")}
	st.Logf = t.Logf
	// Registered after the infrastructure, so it runs first: the services stop before their database is
	// dropped.
	t.Cleanup(func() {
		st.Kill()
		if err := st.Died(); err != nil {
			t.Errorf("services that died during the test: %v", err)
		}
		if !t.Failed() {
			_ = os.RemoveAll(dir)
			return
		}
		for _, p := range st.Procs() {
			t.Logf("--- last lines of %s (%s):\n%s", p.Name, p.Log, p.Tail(20, `"content":"http"`))
		}
		t.Logf("service logs and configs kept in %s", dir)
	})
	return st
}

// startService starts service as name on config, failing t if it cannot.
func startService(t *testing.T, st *stack.Stack, name, service, config string, env ...string) *stack.Proc {
	t.Helper()
	p, err := st.Start(name, service, config, env...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// renderConfig writes service's config with set applied as <name>.yaml in the test's directory.
func renderConfig(t *testing.T, st *stack.Stack, service, name string, set map[string]any) string {
	t.Helper()
	path, err := st.Config(service, name, set)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// startHTTP starts service on a free port (through env, e.g. EPRO_API_PORT) and waits until path answers
// 200. It returns the base URL.
func startHTTP(t *testing.T, st *stack.Stack, service, config, portVar string) (*stack.Proc, string) {
	t.Helper()
	port, err := stack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p := startService(t, st, service, service, config, portVar+"="+strconv.Itoa(port))
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	client := &http.Client{Timeout: 10 * time.Second}
	url := base + stack.ReadyPaths[service]
	if err := st.Wait(context.Background(), time.Minute, service+" "+stack.ReadyPaths[service], stack.HTTPOK(context.Background(), client, url)); err != nil {
		t.Fatal(err)
	}
	return p, base
}

// ---------------------------------------------------------------------------
// Per-test infrastructure
// ---------------------------------------------------------------------------

// pipelineEnv is one test's slice of the infrastructure: its own report and dead-letter topics, consumer
// group and database, and the service processes it started.
type pipelineEnv struct {
	t          *testing.T
	st         *stack.Stack
	brokers    []string
	topic      string
	dlqTopic   string
	group      string
	partitions int
	db         *sql.DB
	kafka      *kafka.Client
	http       *http.Client

	mqConfig  string
	apiConfig string
	drain     time.Duration // Shutdown.WrapUpTime + Pipeline.DrainTimeout of the epro-mq config
}

const dlqPartitions = 3

func newPipelineEnv(t *testing.T, partitions int) *pipelineEnv {
	t.Helper()
	st := newStack(t)
	e := &pipelineEnv{
		t:          t,
		st:         st,
		brokers:    st.Infra.Brokers,
		topic:      infratest.UniqueName(t, "reports"),
		dlqTopic:   infratest.UniqueName(t, "dlq"),
		group:      infratest.UniqueName(t, "epro_mq"),
		partitions: partitions,
	}
	infratest.CreateTopic(t, e.brokers, e.topic, partitions)
	infratest.CreateTopic(t, e.brokers, e.dlqTopic, dlqPartitions)

	db, err := sql.Open("mysql", st.Infra.DSN)
	if err != nil {
		t.Fatalf("open test database: %v", err)
	}
	db.SetMaxOpenConns(4)
	t.Cleanup(func() { _ = db.Close() })
	e.db = db
	// Its own transport: kafka-go's default one is shared by the process and caches metadata for 6s, in
	// which a topic created since looks missing.
	transport := &kafka.Transport{DialTimeout: 5 * time.Second, MetadataTTL: time.Second}
	t.Cleanup(transport.CloseIdleConnections)
	e.kafka = &kafka.Client{Addr: kafka.TCP(e.brokers...), Timeout: 10 * time.Second, Transport: transport}
	// IdleConnTimeout below epro-api's own idle limit: go-zero leaves http.Server.IdleTimeout unset, so the
	// server closes a keep-alive connection after ReadTimeout (4/5 of the 3s Timeout), and a POST sent on a
	// connection the server is closing at that moment fails with EOF and is not retried.
	e.http = &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{MaxIdleConns: 128, MaxIdleConnsPerHost: 128, IdleConnTimeout: time.Second},
	}
	t.Cleanup(e.http.CloseIdleConnections)

	e.mqConfig = e.writeMQConfig("epro-mq", nil)
	e.apiConfig = renderConfig(t, st, "epro-api", "epro-api", map[string]any{"Topic": e.topic})
	wrapUp, err := stack.ConfigDuration(e.mqConfig, "Shutdown.WrapUpTime")
	if err != nil {
		t.Fatal(err)
	}
	drain, err := stack.ConfigDuration(e.mqConfig, "Pipeline.DrainTimeout")
	if err != nil {
		t.Fatal(err)
	}
	e.drain = wrapUp + drain
	t.Logf("topic %s (%d partitions), dead letters %s, group %s, logs in %s", e.topic, partitions, e.dlqTopic, e.group, st.Dir)
	return e
}

// writeMQConfig writes an epro-mq config on the test's topics and group, with extra dotted paths set, to
// <name>.yaml.
func (e *pipelineEnv) writeMQConfig(name string, extra map[string]any) string {
	e.t.Helper()
	set := map[string]any{
		"Reports.Topic":    e.topic,
		"Reports.Group":    e.group,
		"DeadLetter.Topic": e.dlqTopic,
	}
	for k, v := range extra {
		set[k] = v
	}
	return renderConfig(e.t, e.st, "epro-mq", name, set)
}

// embeddedMySQL reports whether the reports land in infratest's in-process go-mysql-server. That server
// runs inside this test binary and so under its race detector, which makes storing about 13 times slower
// (measured: 4,500 reports settled 97 s after the load with -race, 7.5 s without), so the pipeline tests
// scale their load down there. The real servers always get the full load.
func embeddedMySQL() bool { return !infratest.IsReal(infratest.KindMySQL) }

func (e *pipelineEnv) startMQ(name string) *stack.Proc {
	return startService(e.t, e.st, name, "epro-mq", e.mqConfig)
}

// startAPI starts epro-api on a free port and waits until /readyz answers 200. It returns the base URL.
func (e *pipelineEnv) startAPI() (*stack.Proc, string) {
	return startHTTP(e.t, e.st, "epro-api", e.apiConfig, "EPRO_API_PORT")
}

// waitFor polls cond until it holds, failing the test after timeout or as soon as a service dies on its
// own. cond's detail string ends up in the failure message.
func (e *pipelineEnv) waitFor(timeout time.Duration, what string, cond func() (bool, string)) {
	e.t.Helper()
	if err := e.st.Wait(context.Background(), timeout, what, cond); err != nil {
		e.t.Fatal(err)
	}
}

// ---------------------------------------------------------------------------
// Kafka
// ---------------------------------------------------------------------------

// waitGroup waits until the group is stable with exactly members members that share every partition.
func (e *pipelineEnv) waitGroup(members int, timeout time.Duration) {
	e.t.Helper()
	start := time.Now()
	e.waitFor(timeout, fmt.Sprintf("a stable group of %d", members), func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g, err := stack.DescribeGroup(ctx, e.kafka, e.group, e.topic)
		if err != nil {
			return false, err.Error()
		}
		detail := fmt.Sprintf("state %s, %d members, partitions %v", g.State, g.Members, g.Partitions)
		return g.State == "Stable" && g.Members == members && len(g.Partitions) == e.partitions, detail
	})
	e.t.Logf("group stable with %d members after %s", members, time.Since(start).Round(time.Millisecond))
}

// topicEnds returns each partition's high watermark.
func (e *pipelineEnv) topicEnds(ctx context.Context, topic string, partitions int) (map[int]int64, error) {
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for p := 0; p < partitions; p++ {
		req.Topics[topic] = append(req.Topics[topic], kafka.LastOffsetOf(p))
	}
	resp, err := e.kafka.ListOffsets(ctx, req)
	if err != nil {
		return nil, err
	}
	ends := map[int]int64{}
	for _, po := range resp.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("partition %d: %w", po.Partition, po.Error)
		}
		ends[po.Partition] = po.LastOffset
	}
	if len(ends) != partitions {
		return nil, fmt.Errorf("offsets for %d of %d partitions", len(ends), partitions)
	}
	return ends, nil
}

func (e *pipelineEnv) recordCount(ctx context.Context, topic string, partitions int) (int64, error) {
	ends, err := e.topicEnds(ctx, topic, partitions)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, end := range ends {
		n += end // the topics are new, so every partition starts at 0
	}
	return n, nil
}

// groupLag is how many records of the report topic the group has not committed yet. Zero means every
// record is finished (stored or dead-lettered) and nothing more can change.
func (e *pipelineEnv) groupLag(ctx context.Context) (int64, error) {
	ends, err := e.topicEnds(ctx, e.topic, e.partitions)
	if err != nil {
		return 0, err
	}
	parts := make([]int, 0, e.partitions)
	for p := 0; p < e.partitions; p++ {
		parts = append(parts, p)
	}
	resp, err := e.kafka.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: e.group, Topics: map[string][]int{e.topic: parts}})
	if err != nil {
		return 0, err
	}
	if resp.Error != nil {
		return 0, resp.Error
	}
	committed := map[int]int64{}
	for _, p := range resp.Topics[e.topic] {
		if p.Error != nil {
			return 0, fmt.Errorf("partition %d: %w", p.Partition, p.Error)
		}
		committed[p.Partition] = p.CommittedOffset
	}
	var lag int64
	for p, end := range ends {
		c, ok := committed[p]
		if !ok || c < 0 {
			c = 0
		}
		lag += end - c
	}
	return lag, nil
}

// produceAt writes one record to a chosen partition with acks=all and returns its offset.
func (e *pipelineEnv) produceAt(ctx context.Context, partition int, key, value []byte, headers []kafka.Header, at time.Time) (int64, error) {
	resp, err := e.kafka.Produce(ctx, &kafka.ProduceRequest{
		Topic:        e.topic,
		Partition:    partition,
		RequiredAcks: kafka.RequireAll,
		Records: kafka.NewRecordReader(kafka.Record{
			Time: at, Key: kafka.NewBytes(key), Value: kafka.NewBytes(value), Headers: headers,
		}),
	})
	if err != nil {
		return 0, err
	}
	if resp.Error != nil {
		return 0, resp.Error
	}
	return resp.BaseOffset, nil
}

// readTopic reads every record of topic from the beginning.
func (e *pipelineEnv) readTopic(ctx context.Context, topic string, partitions int) ([]kafka.Message, error) {
	ends, err := e.topicEnds(ctx, topic, partitions)
	if err != nil {
		return nil, err
	}
	var out []kafka.Message
	for p := 0; p < partitions; p++ {
		if ends[p] == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{
			Brokers: e.brokers, Topic: topic, Partition: p, MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 100 * time.Millisecond,
		})
		if err := r.SetOffset(kafka.FirstOffset); err != nil {
			r.Close()
			return nil, err
		}
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				return nil, fmt.Errorf("read %s/%d: %w", topic, p, err)
			}
			out = append(out, m)
			if m.Offset >= ends[p]-1 {
				break
			}
		}
		r.Close()
	}
	return out, nil
}

// ---------------------------------------------------------------------------
// MySQL
// ---------------------------------------------------------------------------

const mysqlNoSuchTable = 1146

// rowCount counts stored reports; the table not existing yet (epro-mq migrates at start) counts as 0.
func (e *pipelineEnv) rowCount(ctx context.Context) (int, error) {
	var n int
	err := e.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM reports").Scan(&n)
	var me *mysql.MySQLError
	if errors.As(err, &me) && me.Number == mysqlNoSuchTable {
		return 0, nil
	}
	return n, err
}

type storedRow struct {
	id        uint64
	requestID string
	patientID string
	topic     string
	partition int
	offset    int64
}

func (e *pipelineEnv) storedRows(ctx context.Context) ([]storedRow, error) {
	rows, err := e.db.QueryContext(ctx,
		"SELECT id, request_id, patient_id, kafka_topic, kafka_partition, kafka_offset FROM reports ORDER BY id")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storedRow
	for rows.Next() {
		var r storedRow
		if err := rows.Scan(&r.id, &r.requestID, &r.patientID, &r.topic, &r.partition, &r.offset); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// waitSettled waits until every accepted report is stored, wantDLQ dead letters are written and the group
// has committed the whole report topic.
func (e *pipelineEnv) waitSettled(accepted, wantDLQ int, timeout time.Duration) {
	e.t.Helper()
	start := time.Now()
	e.waitFor(timeout, "every accepted report stored and every dead letter written", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rows, err := e.rowCount(ctx)
		if err != nil {
			return false, "count rows: " + err.Error()
		}
		dlq, err := e.recordCount(ctx, e.dlqTopic, dlqPartitions)
		if err != nil {
			return false, "count dead letters: " + err.Error()
		}
		lag, err := e.groupLag(ctx)
		if err != nil {
			return false, "group lag: " + err.Error()
		}
		detail := fmt.Sprintf("%d of %d rows, %d of %d dead letters, group lag %d", rows, accepted, dlq, wantDLQ, lag)
		return rows >= accepted && dlq >= int64(wantDLQ) && lag == 0, detail
	})
	e.t.Logf("settled %s after the load", time.Since(start).Round(time.Millisecond))
}

// ---------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------

// plannedSend is one POST /v1/reports. A resend repeats an earlier send of the same patient byte for byte.
type plannedSend struct {
	requestID string
	body      []byte
	resend    bool
}

// patientScript is one patient's sends in submission order.
type patientScript struct {
	patientID string
	sends     []plannedSend
}

type loadPlan struct {
	patients []*patientScript
	total    int
	distinct int
	patient  map[string]string // request id -> patient id
}

// answerMarker stands for patient data: it must never show up in a header or a log written for a report.
const answerMarker = "PHI-MARKER-answer-text"

// reportBody is a valid submission. submittedAt grows by a minute per report of the patient and stays
// inside the API's MaxAge and MaxSkew.
func reportBody(requestID, patientID string, seq int, base time.Time) []byte {
	at := base.Add(time.Duration(seq) * time.Minute).In(time.FixedZone("", 2*3600)).Format(time.RFC3339)
	return []byte(fmt.Sprintf(`{"requestId":%q,"patientId":%q,"trialId":"TRIAL-E2E-1","questionnaireId":"PHQ-9",`+
		`"questionnaireVersion":"2.1","submittedAt":%q,"answers":{"q1":%d,"q2":"%s"},"deviceId":"device-%s",`+
		`"appVersion":"1.4.2","locale":"de-DE"}`, requestID, patientID, at, seq%4, answerMarker, patientID))
}

// planLoad spreads total sends over patients; exactly resendShare of them (never a patient's first) repeat
// an earlier request id of the same patient.
func planLoad(rng *mrand.Rand, patients, total int, resendShare float64) *loadPlan {
	base := time.Now().Add(-3 * time.Hour).Truncate(time.Second)
	counts := make([]int, patients)
	for i := range total {
		counts[i%patients]++
	}
	type pos struct{ p, j int }
	var candidates []pos
	for p, n := range counts {
		for j := 1; j < n; j++ {
			candidates = append(candidates, pos{p, j})
		}
	}
	rng.Shuffle(len(candidates), func(i, j int) { candidates[i], candidates[j] = candidates[j], candidates[i] })
	resend := map[pos]bool{}
	for _, c := range candidates[:int(float64(total)*resendShare+0.5)] {
		resend[c] = true
	}
	plan := &loadPlan{total: total, patient: map[string]string{}}
	for p, n := range counts {
		ps := &patientScript{patientID: fmt.Sprintf("patient-%04d", p)}
		var firsts []plannedSend
		for j := range n {
			if resend[pos{p, j}] {
				s := firsts[rng.IntN(len(firsts))]
				s.resend = true
				ps.sends = append(ps.sends, s)
				continue
			}
			id := stack.NewUUID()
			s := plannedSend{requestID: id, body: reportBody(id, ps.patientID, len(firsts), base)}
			firsts = append(firsts, s)
			ps.sends = append(ps.sends, s)
			plan.patient[id] = ps.patientID
			plan.distinct++
		}
		plan.patients = append(plan.patients, ps)
	}
	return plan
}

// loadOutcome is what the API answered.
type loadOutcome struct {
	mu        sync.Mutex
	sent      int
	resent    int
	codes     map[int]int         // HTTP status (0: no answer) -> count
	accepted  map[string]bool     // request ids answered 202 at least once
	order     map[string][]string // patient -> request ids in the order of their first 202
	refused   map[string]bool     // request ids that got an answer other than 202
	unclean   map[string]bool     // patients with any answer other than 202
	failures  []string            // the first few answers other than 202
	patients  map[string]bool     // patients that sent anything
	perSender map[int]int         // sends per sender, to show the load was spread
	latencies []time.Duration     // of 202 answers
}

func (o *loadOutcome) record(sender int, patientID string, s plannedSend, code int, detail string, took time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.sent++
	o.patients[patientID] = true
	o.perSender[sender]++
	if s.resend {
		o.resent++
	}
	o.codes[code]++
	if code == http.StatusAccepted {
		o.latencies = append(o.latencies, took)
		if !o.accepted[s.requestID] {
			o.accepted[s.requestID] = true
			o.order[patientID] = append(o.order[patientID], s.requestID)
		}
		return
	}
	o.refused[s.requestID] = true
	o.unclean[patientID] = true
	if len(o.failures) < 10 {
		o.failures = append(o.failures, fmt.Sprintf("%s (patient %s): %d %s", s.requestID, patientID, code, detail))
	}
}

func (o *loadOutcome) summary() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	codes := make([]string, 0, len(o.codes))
	for c, n := range o.codes {
		codes = append(codes, fmt.Sprintf("%d×%d", n, c))
	}
	sort.Strings(codes)
	lat := slices.Clone(o.latencies)
	slices.Sort(lat)
	pct := func(q float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(q*float64(len(lat)-1))].Round(time.Millisecond)
	}
	return fmt.Sprintf("%d sends (%d resends) to %d patients by %d senders, answers %s, %d distinct ids accepted; 202 latency p50 %s p99 %s max %s",
		o.sent, o.resent, len(o.patients), len(o.perSender), strings.Join(codes, " "),
		len(o.accepted), pct(0.5), pct(0.99), pct(1))
}

// loadRun drives plan against the API: senders goroutines, each owning every senders-th patient and
// sending its patients' reports in turn, one patient's reports strictly one after the other (the next only
// after the previous one's answer), at most rate sends per second overall (0: as fast as it goes). It stops
// early when stop is closed. progress counts finished sends.
type loadRun struct {
	base     string
	client   *http.Client
	plan     *loadPlan
	senders  int
	rate     float64
	stop     <-chan struct{}
	progress atomic.Int64
	outcome  *loadOutcome
}

func newLoadRun(base string, client *http.Client, plan *loadPlan, senders int, rate float64, stop <-chan struct{}) *loadRun {
	return &loadRun{
		base: base, client: client, plan: plan, senders: senders, rate: rate, stop: stop,
		outcome: &loadOutcome{
			codes: map[int]int{}, accepted: map[string]bool{}, order: map[string][]string{},
			refused: map[string]bool{}, unclean: map[string]bool{}, perSender: map[int]int{},
			patients: map[string]bool{},
		},
	}
}

func (l *loadRun) run() {
	var tokens <-chan time.Time
	if l.rate > 0 {
		tick := time.NewTicker(time.Duration(float64(time.Second) / l.rate))
		defer tick.Stop()
		tokens = tick.C
	}
	var wg sync.WaitGroup
	for s := range l.senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []*patientScript
			for i := s; i < len(l.plan.patients); i += l.senders {
				mine = append(mine, l.plan.patients[i])
			}
			next := make([]int, len(mine))
			for {
				progressed := false
				for i, ps := range mine {
					if next[i] >= len(ps.sends) {
						continue
					}
					if tokens != nil {
						select {
						case <-tokens:
						case <-l.stop:
							return
						}
					}
					select {
					case <-l.stop:
						return
					default:
					}
					l.send(s, ps.patientID, ps.sends[next[i]])
					next[i]++
					progressed = true
				}
				if !progressed {
					return
				}
			}
		}()
	}
	wg.Wait()
}

func (l *loadRun) send(sender int, patientID string, s plannedSend) {
	start := time.Now()
	req, err := http.NewRequest(http.MethodPost, l.base+"/v1/reports", bytes.NewReader(s.body))
	if err != nil {
		panic(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.client.Do(req)
	if err != nil {
		l.outcome.record(sender, patientID, s, 0, err.Error(), time.Since(start))
		l.progress.Add(1)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	l.outcome.record(sender, patientID, s, resp.StatusCode, strings.TrimSpace(string(body)), time.Since(start))
	l.progress.Add(1)
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

func firstFew[T any](s []T) []T {
	if len(s) > 5 {
		return s[:5]
	}
	return s
}

// checkNoLossNoDuplicates holds the reports table to the API's answers: one row for each request id
// answered 202, in each patient's submission order, and nothing else.
func (e *pipelineEnv) checkNoLossNoDuplicates(plan *loadPlan, out *loadOutcome) []storedRow {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := e.storedRows(ctx)
	if err != nil {
		e.t.Fatalf("read reports: %v", err)
	}
	out.mu.Lock()
	defer out.mu.Unlock()

	if n := len(out.refused); n > 0 || out.codes[http.StatusAccepted] != out.sent {
		e.t.Errorf("a healthy suite answers every send with 202: %d of %d sends were not, %d request ids never accepted; first: %v",
			out.sent-out.codes[http.StatusAccepted], out.sent, countNotAccepted(out), out.failures)
	}

	seen := map[string]int{}
	var dups, extra, wrongPatient, wrongTopic []string
	for _, r := range rows {
		seen[r.requestID]++
		if seen[r.requestID] == 2 {
			dups = append(dups, r.requestID)
		}
		if !out.accepted[r.requestID] {
			why := "never sent"
			if _, ok := plan.patient[r.requestID]; ok {
				why = "sent but never answered 202"
			}
			extra = append(extra, fmt.Sprintf("%s (row %d, %s/%d@%d, %s)", r.requestID, r.id, r.topic, r.partition, r.offset, why))
		}
		if p, ok := plan.patient[r.requestID]; ok && p != r.patientID {
			wrongPatient = append(wrongPatient, fmt.Sprintf("%s: row says %s, sent for %s", r.requestID, r.patientID, p))
		}
		if r.topic != e.topic {
			wrongTopic = append(wrongTopic, fmt.Sprintf("%s: %s", r.requestID, r.topic))
		}
	}
	var missing []string
	for id := range out.accepted {
		if seen[id] == 0 {
			missing = append(missing, id+" (patient "+plan.patient[id]+")")
		}
	}
	sort.Strings(missing)
	if len(rows) != len(out.accepted) {
		e.t.Errorf("%d rows for %d distinct accepted request ids", len(rows), len(out.accepted))
	}
	if len(missing) > 0 {
		e.t.Errorf("LOST: %d accepted reports have no row; first: %v", len(missing), firstFew(missing))
	}
	if len(dups) > 0 {
		e.t.Errorf("DUPLICATED: %d request ids have more than one row; first: %v", len(dups), firstFew(dups))
	}
	if len(extra) > 0 {
		e.t.Errorf("%d rows for request ids that were not accepted; first: %v", len(extra), firstFew(extra))
	}
	if len(wrongPatient) > 0 {
		e.t.Errorf("%d rows carry the wrong patient; first: %v", len(wrongPatient), firstFew(wrongPatient))
	}
	if len(wrongTopic) > 0 {
		e.t.Errorf("%d rows name another topic than %s; first: %v", len(wrongTopic), e.topic, firstFew(wrongTopic))
	}

	// Order: a patient's rows, taken in id order, must list its accepted ids in the order their first 202
	// came back. Patients with a refused send are left out: a refused send may still reach Kafka later, so
	// their order is not known.
	byPatient := map[string][]string{}
	for _, r := range rows {
		if out.accepted[r.requestID] {
			byPatient[r.patientID] = append(byPatient[r.patientID], r.requestID)
		}
	}
	var disorder []string
	checked := 0
	for patient, want := range out.order {
		if out.unclean[patient] {
			continue
		}
		checked++
		got := byPatient[patient]
		if !slices.Equal(got, want) {
			disorder = append(disorder, fmt.Sprintf("%s: first difference at position %d of %d (rows %d)",
				patient, firstDiff(got, want), len(want), len(got)))
		}
	}
	sort.Strings(disorder)
	if len(disorder) > 0 {
		e.t.Errorf("OUT OF ORDER: %d of %d patients have rows that do not follow their submission order; first: %v",
			len(disorder), checked, firstFew(disorder))
	}
	e.t.Logf("checked %d rows: %d accepted ids, order of %d patients", len(rows), len(out.accepted), checked)
	return rows
}

func countNotAccepted(out *loadOutcome) int {
	n := 0
	for id := range out.refused {
		if !out.accepted[id] {
			n++
		}
	}
	return n
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// checkStatusSample asks GET /v1/reports/{id} about n accepted ids picked at random.
func (e *pipelineEnv) checkStatusSample(base string, out *loadOutcome, rng *mrand.Rand, n int) {
	e.t.Helper()
	out.mu.Lock()
	ids := make([]string, 0, len(out.accepted))
	for id := range out.accepted {
		ids = append(ids, id)
	}
	out.mu.Unlock()
	sort.Strings(ids)
	rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	var bad []string
	for _, id := range ids[:min(n, len(ids))] {
		resp, err := e.http.Get(base + "/v1/reports/" + id)
		if err != nil {
			bad = append(bad, id+": "+err.Error())
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"status":"stored"`)) {
			bad = append(bad, fmt.Sprintf("%s: %d %s", id, resp.StatusCode, bytes.TrimSpace(body)))
		}
	}
	if len(bad) > 0 {
		e.t.Errorf("GET /v1/reports/{id} does not say stored for %d of %d sampled ids; first: %v", len(bad), min(n, len(ids)), firstFew(bad))
	}
}
