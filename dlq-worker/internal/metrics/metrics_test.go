package metrics_test

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/epro-intake/dlq-worker/internal/metrics"
	"github.com/epro-intake/dlq-worker/internal/store"
)

type fakeStats struct {
	st  store.Stats
	err error
}

func (f fakeStats) Stats(context.Context) (store.Stats, error) { return f.st, f.err }

func scrape(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func TestMetrics(t *testing.T) {
	oldest := time.Now().Add(-90 * time.Second)
	m := metrics.New(fakeStats{st: store.Stats{
		ByStatus:  map[string]int64{"new": 4, "replayed": 2},
		ByClass:   map[string]map[string]int64{"poison": {"new": 3}, "permanent": {"new": 1, "replayed": 2}},
		OldestNew: &oldest,
	}}, time.Second)
	m.Ingested("poison")
	m.Ingested("poison")
	m.Ingested("permanent")
	m.Degraded("permanent")
	body := scrape(t, m)
	for _, want := range []string{
		`dlq_worker_dead_letters_ingested_total{error_class="poison"} 2`,
		`dlq_worker_dead_letters_ingested_total{error_class="permanent"} 1`,
		`dlq_worker_dead_letters_degraded_total{error_class="permanent"} 1`,
		`dlq_worker_dead_letters_degraded_total{error_class="poison"} 0`,
		`dlq_worker_dead_letters_unresolved 4`,
		`dlq_worker_dead_letters{error_class="permanent",status="replayed"} 2`,
		`dlq_worker_archive_up 1`,
		`dlq_worker_oldest_unresolved_age_seconds 9`, // 90.x seconds
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
}

func TestMetricsWhenMySQLIsDown(t *testing.T) {
	m := metrics.New(fakeStats{err: errors.New("connection refused")}, time.Second)
	body := scrape(t, m)
	if !strings.Contains(body, "dlq_worker_archive_up 0") || strings.Contains(body, "dlq_worker_dead_letters_unresolved") {
		t.Errorf("scrape with MySQL down:\n%s", body)
	}
	if !strings.Contains(body, `dlq_worker_dead_letters_ingested_total{error_class="poison"} 0`) {
		t.Error("the counters must still be served")
	}
}
