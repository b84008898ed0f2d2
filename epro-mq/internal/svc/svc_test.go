package svc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/common/producer"
	"github.com/epro-intake/common/report"
	"github.com/epro-intake/epro-mq/internal/config"
	"github.com/epro-intake/epro-mq/internal/svc"
)

// proxy forwards TCP connections to target until closed, and can be reopened on the same address: MySQL
// "going away" for the readiness test without stopping the process-wide embedded server.
type proxy struct {
	target string
	addr   string
	mu     sync.Mutex
	ln     net.Listener
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	p := &proxy{target: target}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.close)
	return p
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
			go func() { _, _ = io.Copy(c, up); _ = c.Close() }()
		}
	}()
}

// close stops accepting and cuts every connection.
func (p *proxy) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

func (p *proxy) reopen(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.serve(ln)
}

type suite struct {
	svc              *svc.ServiceContext
	base             string
	brokers          []string
	topic, dlqTopic  string
	mysql            *proxy
	stopped          chan struct{}
	stopConsumerOnce sync.Once
}

// start builds epro-mq's service context on embedded Kafka and MySQL (through a proxy), with the health
// listener on a free port, and starts the consumer and the listener.
func start(t *testing.T) *suite {
	t.Helper()
	brokers := infratest.Kafka(t)
	s := &suite{brokers: brokers, topic: infratest.UniqueName(t, "reports"), dlqTopic: infratest.UniqueName(t, "dlq"),
		stopped: make(chan struct{})}
	infratest.CreateTopic(t, brokers, s.topic, 2)
	infratest.CreateTopic(t, brokers, s.dlqTopic, 1)
	dsn, err := mysql.ParseDSN(infratest.MySQL(t))
	if err != nil {
		t.Fatal(err)
	}
	s.mysql = newProxy(t, dsn.Addr)
	dsn.Addr = s.mysql.addr
	yaml := fmt.Sprintf(`Name: epro-mq-test
Shutdown:
  WaitTime: 20s
Reports:
  Name: r
  Brokers: [%[1]s]
  Topic: %[2]s
  Group: %[3]s
  Offset: first
  ForceCommit: false
  Processors: 3
  MinBytes: 1
Pipeline:
  DrainTimeout: 5s
  CommitInterval: 50ms
  SessionTimeout: 6s
  RebalanceTimeout: 10s
Retry:
  InitialBackoff: 10ms
  MaxBackoff: 20ms
DeadLetter:
  Topic: %[4]s
  Producer:
    Brokers: [%[1]s]
MySQL:
  DSN: '%[5]s'
Health:
  Host: 127.0.0.1
  Port: 0
  PingTimeout: 500ms
`, strings.Join(brokers, ","), s.topic, infratest.UniqueName(t, "group"), s.dlqTopic, dsn.FormatDSN())
	file := filepath.Join(t.TempDir(), "epro-mq.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	ctx, err := svc.NewServiceContext(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	s.svc = ctx
	if err := ctx.Health.Listen(); err != nil {
		t.Fatal(err)
	}
	s.base = "http://" + ctx.Health.Addr().String()
	go ctx.Health.Start()
	go func() { ctx.Consumer.Start(); close(s.stopped) }()
	t.Cleanup(func() {
		s.stopConsumer()
		ctx.Health.Stop()
		ctx.Close()
	})
	return s
}

func (s *suite) stopConsumer() { s.stopConsumerOnce.Do(s.svc.Consumer.Stop) }

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url) //nolint:noctx // a test against a local listener
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func eventually(t *testing.T, within time.Duration, what string, ok func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		good, last := ok()
		if good {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last: %s", what, within, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func envelope(t *testing.T, id, patient string) []byte {
	t.Helper()
	b, err := json.Marshal(report.Envelope{
		SchemaVersion: report.SchemaVersion, RequestID: id, PatientID: patient, TrialID: "trial-1",
		QuestionnaireID: "phq9", QuestionnaireVersion: "1", SubmittedAt: "2026-03-01T20:05:00.123456+01:00",
		Answers: json.RawMessage(`{"q1":3}`), ReceivedAt: time.Now().UTC().Add(-2 * time.Second),
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (s *suite) send(t *testing.T, msgs ...kafka.Message) {
	t.Helper()
	c, err := producer.DefaultConf(s.brokers)
	if err != nil {
		t.Fatal(err)
	}
	p, err := producer.New(c)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range msgs {
		msgs[i].Topic = s.topic
	}
	if err := p.Send(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
}

func scrape(t *testing.T, base string) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	code, body := get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics answered %d", code)
	}
	var parser expfmt.TextParser
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams, body
}

// value returns the value of the family's sample whose labels are exactly labels (name=value pairs).
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		if len(m.GetLabel())*2 != len(labels) {
			continue
		}
		match := true
		for i, l := range m.GetLabel() {
			if l.GetName() != labels[2*i] || l.GetValue() != labels[2*i+1] {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

func TestMetricsAfterStoringADuplicateAndADeadLetter(t *testing.T) {
	s := start(t)
	ids := []string{
		"00000000-0000-4000-8000-00000000a001", "00000000-0000-4000-8000-00000000a002",
		"00000000-0000-4000-8000-00000000a003",
	}
	patients := []string{"patient-metrics-1", "patient-metrics-2", "patient-metrics-3"}
	var msgs []kafka.Message
	for i, id := range ids {
		msgs = append(msgs, kafka.Message{Key: []byte(patients[i]), Value: envelope(t, id, patients[i]),
			Headers: []kafka.Header{{Key: report.HeaderRequestID, Value: []byte(id)}}})
	}
	s.send(t, msgs...)
	// Once the originals are stored: the same report again (a duplicate) and a record that never decodes.
	eventually(t, 30*time.Second, "three rows stored", func() (bool, string) {
		st := s.svc.Ingester.Stats()
		return st.Stored == 3, fmt.Sprintf("%+v", st)
	})
	s.send(t, msgs[0], kafka.Message{Key: []byte(patients[1]), Value: []byte("not json")})

	var fams map[string]*dto.MetricFamily
	var body string
	eventually(t, 30*time.Second, "duplicate and dead letter counted, lag 0", func() (bool, string) {
		fams, body = scrape(t, s.base)
		dup, _ := value(fams, "epro_mq_records_duplicate_total", "detected_by", "database")
		poison, _ := value(fams, "epro_mq_dead_letters_total", "error_class", "poison")
		lag0, ok0 := value(fams, "epro_mq_consumer_lag", "partition", "0")
		lag1, ok1 := value(fams, "epro_mq_consumer_lag", "partition", "1")
		return dup == 1 && poison == 1 && ok0 && ok1 && lag0 == 0 && lag1 == 0,
			fmt.Sprintf("dup=%v poison=%v lag=%v/%v %v/%v", dup, poison, lag0, ok0, lag1, ok1)
	})

	for _, want := range []struct {
		name   string
		labels []string
		value  float64
	}{
		{"epro_mq_records_stored_total", nil, 3},
		{"epro_mq_records_duplicate_total", []string{"detected_by", "fast_path"}, 0},
		{"epro_mq_dead_letters_total", []string{"error_class", "permanent"}, 0},
		{"epro_mq_dead_letters_total", []string{"error_class", "conflict"}, 0},
		{"epro_mq_fast_path_stale_markers_total", nil, 0},
		{"epro_mq_retries_total", []string{"kind", "transient"}, 0},
		{"epro_mq_retries_total", []string{"kind", "permanent_round"}, 0},
		{"epro_mq_rebalances_total", nil, 1},
		{"epro_mq_assigned_partitions", nil, 2},
		{"epro_mq_workers", nil, 3},
		{"epro_mq_workers_busy", nil, 0},
		{"epro_mq_records_in_flight", nil, 0},
		{"epro_mq_lag_up", nil, 1},
		{"epro_mq_oldest_unfinished_age_seconds", []string{"partition", "0"}, 0},
		{"epro_mq_end_to_end_delay_seconds", nil, 3}, // sample count: one per row written
		{"epro_mq_rebalance_pause_seconds", nil, 0},  // the first generation is no pause
	} {
		got, ok := value(fams, want.name, want.labels...)
		if !ok || got != want.value {
			t.Errorf("%s%v = %v (present %v), want %v", want.name, want.labels, got, ok, want.value)
		}
	}
	// Every record went through a batch exactly once: 3 + 1 duplicate + 1 poison.
	if h := fams["epro_mq_batch_records"].GetMetric()[0].GetHistogram(); h.GetSampleSum() != 5 {
		t.Errorf("batch sizes sum to %v, want 5", h.GetSampleSum())
	}
	if h := fams["epro_mq_store_duration_seconds"].GetMetric()[0].GetHistogram(); h.GetSampleCount() < 2 || h.GetSampleSum() <= 0 {
		t.Errorf("store duration: %d samples, sum %v", h.GetSampleCount(), h.GetSampleSum())
	}
	// The envelopes were received 2 s before they were sent.
	if h := fams["epro_mq_end_to_end_delay_seconds"].GetMetric()[0].GetHistogram(); h.GetSampleSum() < 6 {
		t.Errorf("end-to-end delays sum to %v, want at least 3 × 2 s", h.GetSampleSum())
	}
	if ok, _ := value(fams, "epro_mq_offset_commits_total", "result", "ok"); ok < 1 {
		t.Errorf("no commit counted")
	}

	allowed := map[string]bool{"partition": true, "detected_by": true, "kind": true, "error_class": true, "result": true}
	for name, f := range fams {
		if !strings.HasPrefix(name, "epro_mq_") {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if !allowed[l.GetName()] {
					t.Errorf("%s has label %s", name, l.GetName())
				}
			}
		}
	}
	for _, secret := range append(append([]string{}, ids...), patients...) {
		if strings.Contains(body, secret) {
			t.Errorf("the scrape contains %q", secret)
		}
	}
}

func TestReadinessFollowsMySQLAndTheGroup(t *testing.T) {
	s := start(t)
	eventually(t, 30*time.Second, "ready once in the group", func() (bool, string) {
		code, body := get(t, s.base+"/readyz")
		return code == http.StatusOK, fmt.Sprint(code, " ", body)
	})
	if code, body := get(t, s.base+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d %s", code, body)
	}

	s.mysql.close()
	eventually(t, 10*time.Second, "unready while MySQL is unreachable", func() (bool, string) {
		code, body := get(t, s.base+"/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "mysql unreachable"), fmt.Sprint(code, " ", body)
	})
	// Not a reason to restart: liveness holds.
	if code, body := get(t, s.base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz with MySQL down = %d %s", code, body)
	}

	s.mysql.reopen(t)
	eventually(t, 10*time.Second, "ready again once MySQL answers", func() (bool, string) {
		code, body := get(t, s.base+"/readyz")
		return code == http.StatusOK, fmt.Sprint(code, " ", body)
	})

	s.stopConsumer()
	<-s.stopped
	code, body := get(t, s.base+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "consumer stopped") {
		t.Errorf("/readyz after the consumer stopped = %d %s", code, body)
	}
}
