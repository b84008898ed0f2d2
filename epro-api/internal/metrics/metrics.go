// Package metrics exposes epro-api's Prometheus metrics from a registry of its own (as dlq-worker's does), so
// that several service contexts in one test process do not collide in Prometheus' global registry, and so
// that go-zero's own metrics, registered there, are not served beside ours under other names.
//
// Every label value comes from a closed set written here: route templates, HTTP status codes, errcode codes,
// outcomes. Nothing a client chose (a path segment, a request id, a patient id, a field name) becomes a label.
// The children of the fixed sets are made once in New, so the request path only increments them.
package metrics

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/epro-intake/common/errcode"
)

// Routes are the values of the route label: epro-api's route templates, and RouteOther for any path that
// matches none of them.
var Routes = []string{
	"/v1/reports", "/v1/reports/batch", "/v1/reports/:requestId", "/healthz", "/readyz", "/metrics", RouteOther,
}

// RouteOther labels requests whose path matches no route (answered 404).
const RouteOther = "other"

// Codes are the values of the code label of rejections: the stable codes of common/errcode, and CodeOther
// for an error code missing from this list.
var Codes = []string{
	errcode.InvalidJSON, errcode.ValidationFailed, errcode.InvalidRequestID, errcode.PayloadTooLarge,
	errcode.UnsupportedMediaType, errcode.SubmittedAtOutOfRange, errcode.IngestUnavailable, errcode.RateLimited,
	errcode.NotFound, errcode.Unauthorized, errcode.Forbidden, errcode.Conflict, errcode.MethodNotAllowed,
	errcode.Timeout, errcode.Internal, errcode.RequestIDConflict, errcode.PatientMismatch, errcode.TrialMismatch,
	CodeOther,
}

// CodeOther labels an error code that Codes does not list.
const CodeOther = "OTHER"

// Report outcomes: the outcome label of epro_api_reports_total.
const (
	OutcomeAccepted  = "accepted"
	OutcomeDuplicate = "duplicate"
	OutcomeConflict  = "conflict"
)

// UploadDelayBuckets span a phone that sends at once (seconds) to one that was offline for weeks: trial
// monitors judge from this whether answers were given when they say they were.
var UploadDelayBuckets = []float64{
	1, 5, 15, 30, 60, 300, 900, 3600, 3 * 3600, 6 * 3600, 12 * 3600,
	86400, 2 * 86400, 3 * 86400, 7 * 86400, 14 * 86400, 30 * 86400, 60 * 86400, 90 * 86400,
}

// ProduceBuckets cover a synchronous acks=all Send, from a local broker's ~1 ms to the 2 s ProduceTimeout.
var ProduceBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}

// maxStatus bounds the status codes kept in the precomputed table; any other code is counted as 0.
const maxStatus = 600

// Metrics holds epro-api's metrics. The zero value is not usable; New builds one.
type Metrics struct {
	registry *prometheus.Registry

	requests *prometheus.CounterVec
	// requestChildren[route][status] is made on first use: a status code is chosen by the server, so the set
	// is closed, but making every pair up front would expose hundreds of series that never move.
	requestChildren [][maxStatus]atomic.Pointer[prometheus.Counter]
	inFlight        prometheus.Gauge

	rejections  map[string]prometheus.Counter
	rateLimited prometheus.Counter
	reports     map[string]prometheus.Counter
	produceOK   prometheus.Observer
	produceErr  prometheus.Observer
	uploadDelay prometheus.Observer
}

// New registers epro-api's metrics, and the Go runtime and process collectors, in a registry of its own.
func New() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "epro_api_http_requests_total",
			Help: "HTTP requests answered, by route template and status code.",
		}, []string{"route", "code"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "epro_api_http_requests_in_flight",
			Help: "HTTP requests being served.",
		}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "epro_api_rate_limited_reports_total",
			Help: "Reports refused by the rate limits (429 RATE_LIMITED); a batch counts each valid report it held.",
		}),
	}
	m.requestChildren = make([][maxStatus]atomic.Pointer[prometheus.Counter], len(Routes))

	rejections := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "epro_api_rejections_total",
		Help: "Error answers by errcode code: whole requests, and each refused item of a batch.",
	}, []string{"code"})
	m.rejections = make(map[string]prometheus.Counter, len(Codes))
	for _, c := range Codes {
		m.rejections[c] = rejections.WithLabelValues(c)
	}

	reports := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "epro_api_reports_total",
		Help: "Valid reports by request-id outcome: accepted (Kafka acknowledged it), duplicate (a retry of an " +
			"accepted report, nothing produced), conflict (its request id names other content, nothing produced).",
	}, []string{"outcome"})
	m.reports = make(map[string]prometheus.Counter, 3)
	for _, o := range []string{OutcomeAccepted, OutcomeDuplicate, OutcomeConflict} {
		m.reports[o] = reports.WithLabelValues(o)
	}

	produce := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "epro_api_produce_duration_seconds",
		Help:    "Time of one synchronous acks=all Send to Kafka (one report or one batch), by outcome (ok, error).",
		Buckets: ProduceBuckets,
	}, []string{"outcome"})
	m.produceOK = produce.WithLabelValues("ok")
	m.produceErr = produce.WithLabelValues("error")

	upload := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "epro_api_upload_delay_seconds",
		Help: "Accepted reports' delay from the device's submittedAt to the API's receivedAt (0 for a device " +
			"clock ahead of ours).",
		Buckets: UploadDelayBuckets,
	})
	m.uploadDelay = upload

	m.registry.MustRegister(m.requests, m.inFlight, rejections, m.rateLimited, reports, produce, upload,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// Request counts one answered request; route is an index into Routes.
func (m *Metrics) Request(route, status int) {
	if status < 0 || status >= maxStatus {
		status = 0
	}
	slot := &m.requestChildren[route][status]
	c := slot.Load()
	if c == nil {
		made := m.requests.WithLabelValues(Routes[route], strconv.Itoa(status))
		slot.CompareAndSwap(nil, &made)
		c = slot.Load()
	}
	(*c).Inc()
}

// InFlight returns the gauge of requests being served.
func (m *Metrics) InFlight() prometheus.Gauge { return m.inFlight }

// Rejected counts one error answer, or one refused batch item, by its errcode code.
func (m *Metrics) Rejected(code string) {
	c, ok := m.rejections[code]
	if !ok {
		c = m.rejections[CodeOther]
	}
	c.Inc()
}

// RateLimited counts n reports refused by the rate limits.
func (m *Metrics) RateLimited(n int) { m.rateLimited.Add(float64(n)) }

// Report counts one valid report's outcome (OutcomeAccepted, OutcomeDuplicate or OutcomeConflict).
func (m *Metrics) Report(outcome string) { m.reports[outcome].Inc() }

// Produced observes one Send that took d and ended with err.
func (m *Metrics) Produced(d time.Duration, err error) {
	if err != nil {
		m.produceErr.Observe(d.Seconds())
		return
	}
	m.produceOK.Observe(d.Seconds())
}

// UploadDelay observes an accepted report's delay from submittedAt to receivedAt.
func (m *Metrics) UploadDelay(submittedAt, receivedAt time.Time) {
	m.uploadDelay.Observe(max(0, receivedAt.Sub(submittedAt).Seconds()))
}
