//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/epro-intake/common/infratest"
	"github.com/epro-intake/e2e/internal/stack"
)

// promServer is a real Prometheus (Debian's prometheus package) scraping the suite, and its query API.
type promServer struct {
	t    *testing.T
	base string
	http *http.Client
}

// startPrometheus runs the prometheus binary with the rules of deploy/prometheus and a 1 s scrape of
// targets (job name -> host:port). Without the binary the test is skipped, or failed under
// EPRO_TEST_REQUIRE_REAL=1.
func startPrometheus(t *testing.T, targets map[string]string) *promServer {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if infratest.RequireReal() {
			t.Fatal("prometheus not found; EPRO_TEST_REQUIRE_REAL=1 requires it (apt-get install prometheus)")
		}
		t.Skip("prometheus not found (apt-get install prometheus to run this test)")
	}
	root, err := stack.Root(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - %q\nscrape_configs:\n",
		filepath.Join(root, rulesFile))
	for job, target := range targets {
		fmt.Fprintf(&cfg, "  - job_name: %q\n    scrape_timeout: 1s\n    static_configs:\n      - targets: [%q]\n", job, target)
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	port, err := stack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address=127.0.0.1:"+strconv.Itoa(port),
		"--log.level=warn")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logFile.Name()); err == nil {
				t.Logf("prometheus log:\n%s", b)
			}
		}
	})
	p := &promServer{t: t, base: "http://127.0.0.1:" + strconv.Itoa(port), http: &http.Client{Timeout: 5 * time.Second}}
	ctx := context.Background()
	deadline := time.Now().Add(time.Minute)
	for {
		if ok, _ := stack.HTTPOK(ctx, p.http, p.base+"/-/ready")(); ok {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatal("prometheus not ready after a minute")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// query evaluates a PromQL expression that must give one sample (or none) and returns its value; ok is
// false when it gave none.
func (p *promServer) query(expr string) (v float64, ok bool, err error) {
	code, body, err := stack.Call(context.Background(), p.http, http.MethodGet, p.base+"/api/v1/query?query="+url.QueryEscape(expr), nil)
	if err != nil {
		return 0, false, err
	}
	if code != http.StatusOK {
		return 0, false, fmt.Errorf("query %q: %d %s", expr, code, body)
	}
	var r struct {
		Status string
		Data   struct {
			ResultType string
			Result     []struct {
				Value [2]any
			}
		}
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return 0, false, fmt.Errorf("query %q: %w", expr, err)
	}
	if r.Status != "success" || r.Data.ResultType != "vector" || len(r.Data.Result) > 1 {
		return 0, false, fmt.Errorf("query %q: %s", expr, body)
	}
	if len(r.Data.Result) == 0 {
		return 0, false, nil
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	v, err = strconv.ParseFloat(s, 64)
	return v, err == nil, err
}

// waitValue waits until expr gives exactly want.
func (p *promServer) waitValue(e *pipelineEnv, timeout time.Duration, expr string, want float64) {
	p.t.Helper()
	e.waitFor(timeout, fmt.Sprintf("%s == %v", expr, want), func() (bool, string) {
		v, ok, err := p.query(expr)
		if err != nil {
			return false, err.Error()
		}
		return ok && v == want, fmt.Sprintf("value %v (present %v)", v, ok)
	})
}

// A real Prometheus scrapes the three real services: it sees epro-mq go down, the backlog produced through
// epro-api while epro-mq is stopped as consumer lag once epro-mq is back, and the lag drain to zero, the
// records ending as dead letters that dlq-worker archived.
func TestPrometheusSeesBacklogAsLagAndItsDrain(t *testing.T) {
	e := newRoundTripEnv(t)
	mqPort, err := stack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	// The catalogue lacks the version the reports carry: each is retried for some seconds before it is
	// dead-lettered, which holds the backlog unfinished long enough for 1 s scrapes to see it.
	mqCfg := e.writeMQConfig("epro-mq", map[string]any{
		"Name":                 "epro-mq-" + e.group,
		"Questionnaires":       []any{roundTripQuestionnaire + "@" + roundTripKnownVersion},
		"Retry.MaxAttempts":    4,
		"Retry.InitialBackoff": "2s",
		"Retry.MaxBackoff":     "4s",
		"Health.Host":          "127.0.0.1",
		"Health.Port":          mqPort,
	})
	mq := startService(t, e.st, "epro-mq", "epro-mq", mqCfg)
	_, e.apiURL = e.startAPI()
	dlqCfg := renderConfig(t, e.st, "dlq-worker", "dlq-worker", map[string]any{
		"DeadLetters.Topic":   e.dlqTopic,
		"DeadLetters.Group":   e.group + "_dlqw",
		"DeadLetters.MaxWait": "100ms",
	})
	_, e.dlqURL = startHTTP(t, e.st, "dlq-worker", dlqCfg, "EPRO_DLQ_PORT")

	hostPort := func(u string) string { return strings.TrimPrefix(u, "http://") }
	prom := startPrometheus(t, map[string]string{
		"epro-api": hostPort(e.apiURL), "epro-mq": hostPort(mq.URL), "dlq-worker": hostPort(e.dlqURL),
	})
	for _, job := range []string{"epro-api", "epro-mq", "dlq-worker"} {
		prom.waitValue(e.pipelineEnv, time.Minute, fmt.Sprintf(`up{job=%q}`, job), 1)
	}
	prom.waitValue(e.pipelineEnv, time.Minute, `sum(epro_mq_assigned_partitions{job="epro-mq"})`, float64(e.partitions))

	if took, killed := mq.Stop(30 * time.Second); killed {
		t.Fatalf("epro-mq did not stop within 30s (%s)", took)
	}
	prom.waitValue(e.pipelineEnv, 30*time.Second, `up{job="epro-mq"}`, 0)

	const n = 12
	trial := "TRIAL-PROM-" + stack.NewUUID()[:8]
	for i := range n {
		patient := fmt.Sprintf("P-PROM-%d", i)
		r := e.do(http.MethodPost, e.apiURL+"/v1/reports", e.patientToken(patient),
			roundTripSubmission(stack.NewUUID(), patient, trial, roundTripMissingVersion))
		if r.status != http.StatusAccepted {
			t.Fatalf("submit report %d: %d %s", i, r.status, r.body)
		}
	}
	prom.waitValue(e.pipelineEnv, 30*time.Second, `sum(epro_api_reports_total{job="epro-api",outcome="accepted"})`, n)

	startService(t, e.st, "epro-mq-again", "epro-mq", mqCfg)
	prom.waitValue(e.pipelineEnv, time.Minute, `sum(epro_mq_consumer_lag{job="epro-mq"})`, n)
	prom.waitValue(e.pipelineEnv, 2*time.Minute, `sum(epro_mq_consumer_lag{job="epro-mq"})`, 0)
	prom.waitValue(e.pipelineEnv, time.Minute, `sum(dlq_worker_dead_letters_ingested_total{job="dlq-worker",error_class="permanent"})`, n)
	prom.waitValue(e.pipelineEnv, 30*time.Second, `max(epro_mq_oldest_unfinished_age_seconds{job="epro-mq"})`, 0)
}
