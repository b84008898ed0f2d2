// Package metrics exposes epro-mq's Prometheus metrics. Counters that ingest and the consumer keep anyway
// (their Stats, which the progress log line prints too) are read at scrape time rather than counted twice;
// consumer lag is read from the broker at scrape time (one ListOffsets); only the histograms are observed on
// the storing path, once per batch or statement, plus one lock-free observation per stored row for the
// end-to-end delay. No label carries a request id, a patient id or any text from a client: partitions are
// numbers and error classes come from common/report.
package metrics

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/zeromicro/go-zero/core/logx"

	"github.com/epro-intake/epro-mq/internal/consumer"
	"github.com/epro-intake/epro-mq/internal/ingest"
)

// Ingest is where the storing counters come from; *ingest.Ingester implements it.
type Ingest interface {
	Stats() ingest.Stats
}

// Consumer is where the group's counters, positions and pool come from; *consumer.ReportConsumer implements it.
type Consumer interface {
	Stats() consumer.Stats
	Lag(ctx context.Context) ([]consumer.PartitionLag, error)
	Workers() (size, busy int)
}

// Metrics owns a registry of its own, so that several service contexts in one test process do not collide
// in Prometheus' global one. It implements ingest.Observer and consumer.Observer.
type Metrics struct {
	registry       *prometheus.Registry
	batch          prometheus.Histogram
	store          prometheus.Histogram
	delay          prometheus.Histogram
	rebalancePause prometheus.Histogram
}

var (
	_ ingest.Observer   = (*Metrics)(nil)
	_ consumer.Observer = (*Metrics)(nil)
)

// New registers the metrics. in and cons are read at each scrape; the broker is asked for log ends with
// lagTimeout.
func New(in Ingest, cons Consumer, lagTimeout time.Duration) *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "epro_mq_batch_records",
			Help:    "Records per batch a worker hands to storing.",
			Buckets: []float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000},
		}),
		store: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "epro_mq_store_duration_seconds",
			Help:    "Duration of each successful insert statement into the reports table.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "epro_mq_end_to_end_delay_seconds",
			Help:    "Time from the report's receivedAt (epro-api accepted it) to its row being written.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600},
		}),
		rebalancePause: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "epro_mq_rebalance_pause_seconds",
			Help: "Per partition this member consumes after a rebalance: time from the end of its previous " +
				"generation (fetching stopped) to the partition's reader starting again.",
			Buckets: []float64{.1, .25, .5, 1, 2.5, 5, 10, 20, 30, 60, 120},
		}),
	}
	m.registry.MustRegister(m.batch, m.store, m.delay, m.rebalancePause,
		&scraped{in: in, cons: cons, lagTimeout: lagTimeout},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// Batch implements ingest.Observer.
func (m *Metrics) Batch(records int) { m.batch.Observe(float64(records)) }

// Inserted implements ingest.Observer.
func (m *Metrics) Inserted(_ int, d time.Duration) { m.store.Observe(d.Seconds()) }

// Stored implements ingest.Observer.
func (m *Metrics) Stored(delay time.Duration) { m.delay.Observe(delay.Seconds()) }

// RebalancePause implements consumer.Observer.
func (m *Metrics) RebalancePause(d time.Duration) { m.rebalancePause.Observe(d.Seconds()) }

var (
	storedDesc = prometheus.NewDesc("epro_mq_records_stored_total",
		"Records written as new rows in the reports table.", nil, nil)
	duplicateDesc = prometheus.NewDesc("epro_mq_records_duplicate_total",
		"Records found stored already with the same content and finished without a new row, by where the "+
			"duplicate was found: fast_path (Redis proposed, MySQL confirmed) or database (the insert's unique key).",
		[]string{"detected_by"}, nil)
	staleDesc = prometheus.NewDesc("epro_mq_fast_path_stale_markers_total",
		"Records Redis knew as stored whose row MySQL did not confirm (a restored database); they were inserted.", nil, nil)
	retriesDesc = prometheus.NewDesc("epro_mq_retries_total",
		"Retries by kind: transient (a failed MySQL call retried without limit) or permanent_round (a backoff "+
			"before retrying a batch's rows that failed for their own sake).", []string{"kind"}, nil)
	deadLettersDesc = prometheus.NewDesc("epro_mq_dead_letters_total",
		"Records acknowledged on the dead-letter topic, by error class.", []string{"error_class"}, nil)
	rebalancesDesc = prometheus.NewDesc("epro_mq_rebalances_total",
		"Consumer group generations this member joined (the first join after start counts as one).", nil, nil)
	commitsDesc = prometheus.NewDesc("epro_mq_offset_commits_total",
		"Offset commits, by result (ok or error).", []string{"result"}, nil)
	readerErrsDesc = prometheus.NewDesc("epro_mq_fetch_errors_total",
		"Errors the partition readers met; each costs a reconnect of that reader.", nil, nil)
	assignedDesc = prometheus.NewDesc("epro_mq_assigned_partitions",
		"Partitions this member holds in the current generation.", nil, nil)
	inFlightDesc = prometheus.NewDesc("epro_mq_records_in_flight",
		"Records fetched and handed to the worker pool, not yet stored or dead-lettered.", nil, nil)
	workersDesc = prometheus.NewDesc("epro_mq_workers",
		"Size of the worker pool (Reports.Processors).", nil, nil)
	busyDesc = prometheus.NewDesc("epro_mq_workers_busy",
		"Workers storing a batch now.", nil, nil)
	lagDesc = prometheus.NewDesc("epro_mq_consumer_lag",
		"Per partition this member holds: log end offset minus the group's committed offset, in records.",
		[]string{"partition"}, nil)
	oldestDesc = prometheus.NewDesc("epro_mq_oldest_unfinished_age_seconds",
		"Per partition this member holds: age (by record timestamp) of the lowest record fetched and not yet "+
			"stored or dead-lettered; 0 when none is.", []string{"partition"}, nil)
	lagUpDesc = prometheus.NewDesc("epro_mq_lag_up",
		"1 when the partitions' log ends could be read from the broker at this scrape.", nil, nil)
)

type scraped struct {
	in         Ingest
	cons       Consumer
	lagTimeout time.Duration
}

func (s *scraped) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{storedDesc, duplicateDesc, staleDesc, retriesDesc, deadLettersDesc,
		rebalancesDesc, commitsDesc, readerErrsDesc, assignedDesc, inFlightDesc, workersDesc, busyDesc, lagDesc,
		oldestDesc, lagUpDesc} {
		ch <- d
	}
}

func (s *scraped) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	in := s.in.Stats()
	counter(storedDesc, in.Stored)
	counter(duplicateDesc, in.SkippedByRedis, "fast_path")
	counter(duplicateDesc, in.Duplicates, "database")
	counter(staleDesc, in.StaleMarkers)
	counter(retriesDesc, in.TransientRetries, "transient")
	counter(retriesDesc, in.PermanentRetryRounds, "permanent_round")
	for class, n := range in.DeadLetteredByClass {
		counter(deadLettersDesc, n, class)
	}
	cs := s.cons.Stats()
	counter(rebalancesDesc, int64(cs.Generations))
	counter(commitsDesc, int64(cs.Commits), "ok")
	counter(commitsDesc, int64(cs.CommitErrs), "error")
	counter(readerErrsDesc, int64(cs.ReaderErrs))
	gauge(assignedDesc, float64(len(cs.Assigned)))
	gauge(inFlightDesc, float64(cs.InFlight))
	size, busy := s.cons.Workers()
	gauge(workersDesc, float64(size))
	gauge(busyDesc, float64(busy))

	ctx, cancel := context.WithTimeout(context.Background(), s.lagTimeout)
	defer cancel()
	lags, err := s.cons.Lag(ctx)
	if err != nil {
		// The partitions that answered are still reported; lag_up=0 says some did not.
		logx.Errorf("metrics: read partition log ends: %v", err)
	}
	gauge(lagUpDesc, boolValue(err == nil))
	now := time.Now()
	for _, l := range lags {
		p := strconv.Itoa(l.Partition)
		gauge(lagDesc, float64(max(0, l.LogEnd-l.Committed)), p)
		age := 0.0
		if !l.OldestUnfinished.IsZero() {
			age = max(0, now.Sub(l.OldestUnfinished).Seconds())
		}
		gauge(oldestDesc, age, p)
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
