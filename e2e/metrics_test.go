package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/e2e/internal/stack"
)

// scrapeMQ reads epro-mq's /metrics and sums each metric name's samples whose labels contain match ("" for
// all). It returns the body too.
func scrapeMQ(ctx context.Context, url string) (map[string]float64, string, error) {
	_, body, err := stack.Call(ctx, &http.Client{Timeout: 5 * time.Second}, http.MethodGet, url+"/metrics", nil)
	if err != nil {
		return nil, "", err
	}
	sums := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || !strings.HasPrefix(line, "epro_mq_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, "", fmt.Errorf("metrics line %q: %w", line, err)
		}
		series := line[:i]
		name, _, _ := strings.Cut(series, "{")
		sums[name] += v
		if series != name {
			sums[series] += v
		}
	}
	return sums, string(body), sc.Err()
}

// The real binary, on the port the stack gave it: ready once in its group, a held backlog shows as lag and
// as the age of the oldest unfinished record, and the lag drains to zero once the records are finished.
func TestEproMQLagShowsAHeldBacklogAndDrainsToZero(t *testing.T) {
	e := newPipelineEnv(t, 2)
	// The catalogue lacks the records' version: each fails permanently and is retried for some seconds
	// before it is dead-lettered, which holds the backlog unfinished where a scrape can see it.
	cfg := e.writeMQConfig("epro-mq", map[string]any{
		"Questionnaires":       []any{"phq9@999"},
		"Retry.MaxAttempts":    4,
		"Retry.InitialBackoff": "1500ms",
		"Retry.MaxBackoff":     "3s",
	})
	mq := startService(t, e.st, "epro-mq", "epro-mq", cfg)
	if mq.URL == "" {
		t.Fatal("the stack gave epro-mq no listener")
	}
	ctx := context.Background()
	client := &http.Client{Timeout: 5 * time.Second}
	if err := e.st.Wait(ctx, time.Minute, "epro-mq /readyz", stack.HTTPOK(ctx, client, mq.URL+"/readyz")); err != nil {
		t.Fatal(err)
	}

	const n = 20
	var secrets []string
	for i := range n {
		id := fmt.Sprintf("00000000-0000-4000-8000-%012d", 900000+i)
		patient := fmt.Sprintf("patient-lag-%d", i)
		secrets = append(secrets, id, patient)
		value, err := json.Marshal(report.Envelope{
			SchemaVersion: report.SchemaVersion, RequestID: id, PatientID: patient, TrialID: "trial-1",
			QuestionnaireID: "phq9", QuestionnaireVersion: "1", SubmittedAt: "2026-03-01T20:05:00.123456+01:00",
			Answers: json.RawMessage(`{"q1":3}`), ReceivedAt: time.Now().UTC(),
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.produceAt(ctx, i%e.partitions, []byte(patient), value,
			[]kafka.Header{{Key: report.HeaderRequestID, Value: []byte(id)}}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}

	e.waitFor(20*time.Second, "lag showing the held backlog", func() (bool, string) {
		m, _, err := scrapeMQ(ctx, mq.URL)
		if err != nil {
			return false, err.Error()
		}
		return m["epro_mq_consumer_lag"] == n && m["epro_mq_oldest_unfinished_age_seconds"] > 0 && m["epro_mq_lag_up"] == 1,
			fmt.Sprintf("lag %v, oldest %v, up %v, partitions %v, in flight %v, dead letters %v", m["epro_mq_consumer_lag"],
				m["epro_mq_oldest_unfinished_age_seconds"], m["epro_mq_lag_up"], m["epro_mq_assigned_partitions"],
				m["epro_mq_records_in_flight"], m["epro_mq_dead_letters_total"])
	})
	var body string
	e.waitFor(2*time.Minute, "lag drained to zero", func() (bool, string) {
		m, b, err := scrapeMQ(ctx, mq.URL)
		if err != nil {
			return false, err.Error()
		}
		body = b
		dead := m[`epro_mq_dead_letters_total{error_class="permanent"}`]
		return m["epro_mq_consumer_lag"] == 0 && dead == n && m["epro_mq_oldest_unfinished_age_seconds"] == 0,
			fmt.Sprintf("lag %v, dead letters %v, oldest %v", m["epro_mq_consumer_lag"], dead, m["epro_mq_oldest_unfinished_age_seconds"])
	})
	for _, s := range secrets {
		if strings.Contains(body, s) {
			t.Errorf("epro-mq's /metrics contains %q", s)
		}
	}
	if code, b, err := stack.Call(ctx, client, http.MethodGet, mq.URL+"/healthz", nil); err != nil || code != http.StatusOK {
		t.Errorf("/healthz = %d %s %v", code, b, err)
	}
}
