//go:build linux

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/e2e/internal/stack"
)

// exposedNames scrapes url (a /metrics endpoint) and returns the metric names a Prometheus scraping it would
// store: each sample's name, and for a histogram or summary its _bucket, _sum and _count series.
func exposedNames(ctx context.Context, url string) (map[string]bool, error) {
	code, body, err := stack.Call(ctx, &http.Client{Timeout: 5 * time.Second}, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %d", url, code)
	}
	names := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			if f := strings.Fields(rest); len(f) == 2 && (f[1] == "histogram" || f[1] == "summary") {
				names[f[0]+"_sum"] = true
				names[f[0]+"_count"] = true
				if f[1] == "histogram" {
					names[f[0]+"_bucket"] = true
				}
			}
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names, sc.Err()
}

// Every PromQL expression of the alert rules and the dashboard selects only metric names the three services
// expose, scraped from the real binaries once reports, a rejected request and a dead letter went through
// them, so a renamed or removed metric fails here. `up` is the one name Prometheus itself makes.
func TestMonitoringQueriesUseExposedMetrics(t *testing.T) {
	root, err := stack.Root(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rules, err := loadRuleQueries(filepath.Join(root, rulesFile))
	if err != nil {
		t.Fatal(err)
	}
	panels, err := loadDashboardQueries(filepath.Join(root, dashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) == 0 || len(panels) == 0 {
		t.Fatalf("%d rule and %d dashboard expressions found", len(rules), len(panels))
	}
	used := map[string][]string{} // metric name -> where
	for _, q := range slices.Concat(rules, panels) {
		names, err := promMetricNames(q.expr)
		if err != nil {
			t.Errorf("%s: %v", q.where, err)
			continue
		}
		if len(names) == 0 {
			t.Errorf("%s: no metric name found in %q", q.where, q.expr)
		}
		for _, n := range names {
			used[n] = append(used[n], q.where)
		}
	}
	fromPrometheus := map[string]bool{"up": true}

	e := newRoundTripEnv(t)
	e.startMQ(roundTripKnownVersion)
	_, e.apiURL = e.startAPI()
	dlqCfg := renderConfig(t, e.st, "dlq-worker", "dlq-worker", map[string]any{
		"DeadLetters.Topic":   e.dlqTopic,
		"DeadLetters.Group":   e.group + "_dlqw",
		"DeadLetters.MaxWait": "100ms",
	})
	_, e.dlqURL = startHTTP(t, e.st, "dlq-worker", dlqCfg, "EPRO_DLQ_PORT")
	if e.mq.URL == "" {
		t.Fatal("the stack gave epro-mq no health listener")
	}

	// A stored report, a rejected request and a poison record (dead-lettered by epro-mq, archived by
	// dlq-worker) give the counters and histograms their samples.
	trial := "TRIAL-MON-" + stack.NewUUID()[:8]
	if r := e.do(http.MethodPost, e.apiURL+"/v1/reports", e.patientToken("P-MON"), roundTripSubmission(stack.NewUUID(), "P-MON", trial, roundTripKnownVersion)); r.status != http.StatusAccepted {
		t.Fatalf("submit report: %d %s", r.status, r.body)
	}
	if r := e.do(http.MethodPost, e.apiURL+"/v1/reports", e.patientToken("P-MON"), map[string]any{"requestId": "not-a-uuid"}); r.status != http.StatusBadRequest {
		t.Fatalf("submit a bad report: %d %s", r.status, r.body)
	}
	w := &kafka.Writer{Addr: kafka.TCP(e.brokers...), Topic: e.topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond, Transport: &kafka.Transport{MetadataTTL: time.Second}}
	defer func() { _ = w.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("P-MON-POISON"), Value: []byte("{not json")}); err != nil {
		t.Fatalf("write a poison record: %v", err)
	}
	e.wait(60*time.Second, "the report stored", func() bool {
		return e.count("SELECT COUNT(*) FROM reports WHERE trial_id = ?", trial) == 1
	})
	e.wait(90*time.Second, "the dead letter archived", func() bool { return e.count("SELECT COUNT(*) FROM dead_letters") == 1 })

	endpoints := map[string]string{
		"epro-api":   e.apiURL + "/metrics",
		"epro-mq":    e.mq.URL + "/metrics",
		"dlq-worker": e.dlqURL + "/metrics",
	}
	var missing []string
	// Gauges read at scrape time (lag, the dead-letter counters by class) may trail the database by a moment.
	e.waitFor(30*time.Second, "every queried metric exposed", func() (bool, string) {
		exposed := map[string]bool{}
		for svc, url := range endpoints {
			names, err := exposedNames(context.Background(), url)
			if err != nil {
				return false, fmt.Sprintf("%s: %v", svc, err)
			}
			for n := range names {
				exposed[n] = true
			}
		}
		missing = missing[:0]
		for n := range used {
			if !exposed[n] && !fromPrometheus[n] {
				missing = append(missing, n)
			}
		}
		return len(missing) == 0, fmt.Sprintf("not exposed: %q", missing)
	})
	t.Logf("%d expressions use %d metric names, all exposed", len(rules)+len(panels), len(used))
}
