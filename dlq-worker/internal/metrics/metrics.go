// Package metrics exposes dlq-worker's Prometheus metrics: dead letters archived by error class (and those
// archived degraded), and the
// unresolved backlog (count and age of the oldest) read from MySQL at scrape time, so the gauges are right
// after a restart and whichever instance is scraped.
package metrics

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/zeromicro/go-zero/core/logx"

	"github.com/epro-intake/common/report"
	"github.com/epro-intake/dlq-worker/internal/store"
)

// StatsSource counts dead letters; *store.DeadLetters implements it.
type StatsSource interface {
	Stats(ctx context.Context) (store.Stats, error)
}

// Metrics owns a registry of its own, so that several service contexts in one test process do not collide
// in Prometheus' global one.
type Metrics struct {
	registry *prometheus.Registry
	ingested *prometheus.CounterVec
	degraded *prometheus.CounterVec
}

// New registers the metrics. Stats are read with timeout at each scrape.
func New(stats StatsSource, timeout time.Duration) *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		ingested: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dlq_worker_dead_letters_ingested_total",
			Help: "Dead letters archived in MySQL, by error class (re-reads of an archived record are not counted).",
		}, []string{"error_class"}),
		degraded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dlq_worker_dead_letters_degraded_total",
			Help: "Dead letters archived degraded (not storable as they were; kept raw for review), by error class.",
		}, []string{"error_class"}),
	}
	// The known classes exist from the start, so a rate() over them works before the first dead letter.
	for _, class := range []string{report.ErrorClassPoison, report.ErrorClassPermanent, report.ErrorClassConflict} {
		m.ingested.WithLabelValues(class)
		m.degraded.WithLabelValues(class)
	}
	m.registry.MustRegister(m.ingested, m.degraded, &backlog{stats: stats, timeout: timeout},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Ingested counts one newly archived dead letter.
func (m *Metrics) Ingested(errorClass string) {
	m.ingested.WithLabelValues(errorClass).Inc()
}

// Degraded counts one newly archived dead letter that was archived degraded; Ingested counts it too.
func (m *Metrics) Degraded(errorClass string) {
	m.degraded.WithLabelValues(errorClass).Inc()
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

var (
	unresolvedDesc = prometheus.NewDesc("dlq_worker_dead_letters_unresolved",
		"Dead letters with status new.", nil, nil)
	oldestDesc = prometheus.NewDesc("dlq_worker_oldest_unresolved_age_seconds",
		"Age of the oldest dead letter with status new (0 when there is none).", nil, nil)
	byStatusDesc = prometheus.NewDesc("dlq_worker_dead_letters",
		"Archived dead letters by status and error class.", []string{"status", "error_class"}, nil)
	upDesc = prometheus.NewDesc("dlq_worker_archive_up",
		"1 when the backlog gauges could be read from MySQL at this scrape.", nil, nil)
)

type backlog struct {
	stats   StatsSource
	timeout time.Duration
}

func (b *backlog) Describe(ch chan<- *prometheus.Desc) {
	ch <- unresolvedDesc
	ch <- oldestDesc
	ch <- byStatusDesc
	ch <- upDesc
}

func (b *backlog) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	st, err := b.stats.Stats(ctx)
	if err != nil {
		// Missing gauges plus up=0 alert better than a failed scrape, which hides the counters too.
		logx.Errorf("metrics: read dead-letter stats: %v", err)
		ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(unresolvedDesc, prometheus.GaugeValue, float64(st.Unresolved()))
	age := 0.0
	if st.OldestNew != nil {
		age = max(0, time.Since(*st.OldestNew).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, age)
	for class, byStatus := range st.ByClass {
		for status, n := range byStatus {
			ch <- prometheus.MustNewConstMetric(byStatusDesc, prometheus.GaugeValue, float64(n), status, class)
		}
	}
}
