//go:build linux

// The pipeline tests need Pdeathsig, which only Linux has: without it a test binary killed by go test's
// -timeout would leave epro-mq replicas running and consuming forever on the CI machine.

package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/e2e/internal/ledger"
	"github.com/epro-intake/e2e/internal/load"
	"github.com/epro-intake/e2e/internal/stack"
)

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
	return newStackOn(t, infratest.Kafka(t))
}

// newStackOn is newStack on the given Kafka brokers.
func newStackOn(t *testing.T, brokers []string) *stack.Stack {
	t.Helper()
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
	inf := &stack.Infra{Brokers: brokers, DSN: infratest.MySQL(t), RedisAddr: infratest.Redis(t)}
	dir, err := os.MkdirTemp("", "epro-e2e-"+infratest.UniqueName(t, "")+"-")
	if err != nil {
		t.Fatal(err)
	}
	// epro-api's development token key, fresh for each test; requests go out with its patients' tokens.
	tokens, err := stack.NewPatientTokens()
	if err != nil {
		t.Fatal(err)
	}
	// EPRO_REDIS_PASSWORD is set empty so that one from the developer's shell cannot reach the test Redis.
	st := &stack.Stack{Root: buildRoot, Bin: buildDir, Dir: dir, Infra: inf, Tokens: tokens,
		Env: append(append(os.Environ(), inf.Env()...), "EPRO_REDIS_PASSWORD=", tokens.Env())}
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

// pipelineEnv is one test's slice of the infrastructure: its own report and dead-letter topics, consumer
// group and database, and the service processes it started.
type pipelineEnv struct {
	t                      *testing.T
	st                     *stack.Stack
	brokers                []string
	topic, dlqTopic, group string
	partitions             int
	db                     *sql.DB
	kafka                  *kafka.Client
	http                   *http.Client
	mqConfig, apiConfig    string
	drain                  time.Duration // Shutdown.WrapUpTime + Pipeline.DrainTimeout of the epro-mq config
}

const dlqPartitions = 3

func newPipelineEnv(t *testing.T, partitions int) *pipelineEnv {
	t.Helper()
	return newPipelineEnvOn(t, newStack(t), partitions)
}

// newPipelineEnvOn is newPipelineEnv on st. Its topics get replication factor 3 and min.insync.replicas 2
// when st's Kafka has three brokers or more (infratest.CreateTopic).
func newPipelineEnvOn(t *testing.T, st *stack.Stack, partitions int) *pipelineEnv {
	t.Helper()
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

	cfg, err := stack.ParseDSN(st.Infra.DSN)
	if err != nil {
		t.Fatalf("test database: %v", err)
	}
	db, err := stack.OpenMySQL(cfg, cfg.DBName, 4)
	if err != nil {
		t.Fatalf("open test database: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	e.db = db
	// Its own transport: kafka-go's default one is shared by the process and caches metadata for 6s, in
	// which a topic created since looks missing.
	transport := &kafka.Transport{DialTimeout: 5 * time.Second, MetadataTTL: time.Second}
	t.Cleanup(transport.CloseIdleConnections)
	e.kafka = &kafka.Client{Addr: kafka.TCP(e.brokers...), Timeout: 10 * time.Second, Transport: transport}
	e.http = load.NewHTTPClient(112)
	t.Cleanup(e.http.CloseIdleConnections)

	e.mqConfig = e.writeMQConfig("epro-mq", nil)
	e.apiConfig = renderConfig(t, st, "epro-api", "epro-api", map[string]any{"Topic": e.topic})
	for _, key := range []string{"Shutdown.WrapUpTime", "Pipeline.DrainTimeout"} {
		d, err := stack.ConfigDuration(e.mqConfig, key)
		if err != nil {
			t.Fatal(err)
		}
		e.drain += d
	}
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
	for _, p := range partitionList(partitions) {
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
	resp, err := e.kafka.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: e.group, Topics: map[string][]int{e.topic: partitionList(e.partitions)}})
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

// partitionList is 0..n-1.
func partitionList(n int) []int {
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	return all
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

// waitSettled waits until every accepted report is stored, wantDLQ dead letters are written and the group
// has committed the whole report topic.
func (e *pipelineEnv) waitSettled(accepted, wantDLQ int, timeout time.Duration) {
	e.t.Helper()
	start := time.Now()
	e.waitFor(timeout, "every accepted report stored and every dead letter written", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rows, err := ledger.Count(ctx, e.db, time.Time{})
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

// checkNoLossNoDuplicates holds the reports table to the API's answers: one row for each request id
// answered 202 (or 200, the original receipt of a resend), in each patient's submission order, and nothing
// else.
func (e *pipelineEnv) checkNoLossNoDuplicates(out *load.Result) []ledger.Row {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := ledger.Rows(ctx, e.db)
	if err != nil {
		e.t.Fatalf("read reports: %v", err)
	}
	answers := load.Answers(out)
	if n := out.Sent - out.Codes[http.StatusAccepted] - out.Codes[http.StatusOK]; n > 0 {
		e.t.Errorf("a healthy suite answers every send with 202, or a resend with 200: %d of %d sends were not, %d request ids never accepted; first: %v",
			n, out.Sent, answers.NeverAccepted(), out.Failures)
	}
	f := ledger.Check(rows, answers, ledger.Options{Topic: e.topic, Order: true})
	if f.Stored != f.Accepted {
		e.t.Errorf("%d rows for %d distinct accepted request ids", f.Stored, f.Accepted)
	}
	// Strict: a healthy suite answered every send 202 (or 200), so no row may be of a refused id either.
	for _, p := range f.Problems(true) {
		e.t.Error(p)
	}
	e.t.Logf("checked %d rows: %d accepted ids, order of %d patients", f.Stored, f.Accepted, f.OrderChecked)
	return rows
}

// checkStatusSample asks GET /v1/reports/{id} about n accepted ids picked at random, each as its patient.
func (e *pipelineEnv) checkStatusSample(base string, out *load.Result, rng *mrand.Rand, n int) {
	e.t.Helper()
	ids := load.Answers(out).Accepted()
	patients := map[string]string{}
	for _, a := range out.Accepted {
		patients[a.ID] = a.Patient
	}
	rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	var bad []string
	for _, id := range ids[:min(n, len(ids))] {
		authz, err := e.st.Tokens.Authorization(patients[id])
		if err != nil {
			e.t.Fatal(err)
		}
		code, body, err := stack.Call(context.Background(), e.http, http.MethodGet, base+"/v1/reports/"+id, nil, "Authorization", authz)
		if err != nil {
			bad = append(bad, id+": "+err.Error())
		} else if code != http.StatusOK || !bytes.Contains(body, []byte(`"status":"stored"`)) {
			bad = append(bad, fmt.Sprintf("%s: %d %s", id, code, body))
		}
	}
	if len(bad) > 0 {
		e.t.Errorf("GET /v1/reports/{id} does not say stored for %d of %d sampled ids; first: %v", len(bad), min(n, len(ids)), ledger.FirstFew(bad))
	}
}
