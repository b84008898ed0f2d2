package metrics_test

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/epro-intake/epro-mq/internal/consumer"
	"github.com/epro-intake/epro-mq/internal/ingest"
	"github.com/epro-intake/epro-mq/internal/metrics"
)

type fakeIngest struct{ st ingest.Stats }

func (f fakeIngest) Stats() ingest.Stats { return f.st }

type fakeConsumer struct {
	lags []consumer.PartitionLag
	err  error
}

func (f fakeConsumer) Stats() consumer.Stats {
	return consumer.Stats{Generations: 2, Assigned: []int{3, 7}}
}
func (f fakeConsumer) Lag(context.Context) ([]consumer.PartitionLag, error) {
	return f.lags, f.err
}
func (f fakeConsumer) Workers() (int, int) { return 4, 1 }

func scrape(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("/metrics answered %d", rec.Code)
	}
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func TestMetrics(t *testing.T) {
	in := fakeIngest{ingest.Stats{Stored: 10, SkippedByRedis: 2, Duplicates: 3, StaleMarkers: 1, TransientRetries: 5,
		PermanentRetryRounds: 6, DeadLetteredByClass: map[string]int64{"poison": 1, "permanent": 0, "conflict": 2}}}
	cons := fakeConsumer{lags: []consumer.PartitionLag{
		{Partition: 3, LogEnd: 120, Committed: 100, OldestUnfinished: time.Now().Add(-42 * time.Second)},
		{Partition: 7, LogEnd: 50, Committed: 50},
	}}
	m := metrics.New(in, cons, time.Second)
	m.Batch(4)
	m.Inserted(4, 30*time.Millisecond)
	m.Stored(2 * time.Second)
	m.RebalancePause(3 * time.Second)
	body := scrape(t, m)
	for _, want := range []string{
		"epro_mq_records_stored_total 10",
		`epro_mq_records_duplicate_total{detected_by="fast_path"} 2`,
		`epro_mq_records_duplicate_total{detected_by="database"} 3`,
		"epro_mq_fast_path_stale_markers_total 1",
		`epro_mq_retries_total{kind="transient"} 5`,
		`epro_mq_retries_total{kind="permanent_round"} 6`,
		`epro_mq_dead_letters_total{error_class="conflict"} 2`,
		`epro_mq_dead_letters_total{error_class="permanent"} 0`,
		"epro_mq_rebalances_total 2",
		"epro_mq_assigned_partitions 2",
		"epro_mq_workers 4",
		"epro_mq_workers_busy 1",
		`epro_mq_consumer_lag{partition="3"} 20`,
		`epro_mq_consumer_lag{partition="7"} 0`,
		`epro_mq_oldest_unfinished_age_seconds{partition="3"} 42`,
		`epro_mq_oldest_unfinished_age_seconds{partition="7"} 0`,
		"epro_mq_lag_up 1",
		"epro_mq_batch_records_sum 4",
		`epro_mq_store_duration_seconds_bucket{le="0.05"} 1`,
		"epro_mq_end_to_end_delay_seconds_sum 2",
		"epro_mq_rebalance_pause_seconds_sum 3",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestMetricsWhenTheBrokerDoesNotAnswer(t *testing.T) {
	m := metrics.New(fakeIngest{}, fakeConsumer{err: errors.New("dial tcp: connection refused")}, time.Second)
	body := scrape(t, m)
	if !strings.Contains(body, "epro_mq_lag_up 0") || strings.Contains(body, "epro_mq_consumer_lag{") {
		t.Errorf("scrape with the broker down:\n%s", body)
	}
	if !strings.Contains(body, "epro_mq_records_stored_total 0") {
		t.Error("the counters must still be served")
	}
}
