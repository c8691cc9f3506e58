// Package metrics is Keyward's Prometheus instrumentation: a registry owned by the server (never
// the global default one, so that several servers in one process, as in the tests, keep their
// own counts), the Go and process collectors, per-route HTTP request counts and durations, the
// fleet's devices by escrow status and keys by status, the store's commits and acknowledged
// writes, the background jobs, and the delivery of the audit trail to outside receivers.
//
// Labels carry only values from closed sets: route patterns of the route tables (never raw
// paths, which hold device and key IDs), HTTP methods and status codes, status names and job
// names, and the names of the audit trail's sinks. No label ever carries key material, a token, a device name, an address or an ID.
//
// The package serves nothing by itself: the JSON API serves Handler at GET /metrics behind its
// authentication and authorization, like every other route.
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Store is what the metrics need from storage: counts of the whole fleet, no names or IDs, and
// of its own write path.
type Store interface {
	Census(ctx context.Context) (escrow.Census, error)
	// WriteCounts returns the write transactions committed and the write requests they
	// acknowledged, since the store was opened.
	WriteCounts() (commits, writes int64)
}

// Options configures the metrics. The zero Options is usable.
type Options struct {
	// CensusTTL is how long one census of the fleet is reused (default 15 s): scrapes, however
	// many and from however many Prometheus servers, query the database at most once per TTL.
	CensusTTL time.Duration
	// CensusTimeout bounds one census query (default 5 s): a slow database makes the scrape
	// report keyward_store_up 0 rather than hang.
	CensusTimeout time.Duration
	// Now is the clock of the census cache (default time.Now).
	Now func() time.Time
}

// Metrics holds the server's registry and its instruments.
type Metrics struct {
	reg      *prometheus.Registry
	handler  http.Handler
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec

	jobRuns     prometheus.Counter
	jobFailures prometheus.Counter
	jobItems    *prometheus.CounterVec
	jobLastOK   prometheus.Gauge

	// The audit trail's delivery (delivery.go); nil until UseDelivery.
	delivered        *prometheus.CounterVec
	deliveryFailures *prometheus.CounterVec
	now              func() time.Time
	censusTimeout    time.Duration
}

// New returns the metrics of one server, counting its fleet through store. log receives the
// cause when a census fails; the scrape itself only says keyward_store_up 0.
func New(store Store, log *slog.Logger, opts Options) *Metrics {
	if opts.CensusTTL <= 0 {
		opts.CensusTTL = 15 * time.Second
	}
	if opts.CensusTimeout <= 0 {
		opts.CensusTimeout = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(), now: opts.Now, censusTimeout: opts.CensusTimeout,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyward_http_requests_total",
			Help: "HTTP requests answered, by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "keyward_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route pattern.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
		jobRuns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyward_jobs_runs_total",
			Help: "Runs of the background jobs (purge, rotation timeouts, maximum key age).",
		}),
		jobFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyward_jobs_failures_total",
			Help: "Runs of the background jobs that ended in an error.",
		}),
		jobItems: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyward_jobs_items_total",
			Help: "Items the background jobs acted on: keys purged, rotations timed out, rotations requested for maximum key age.",
		}, []string{"job"}),
		jobLastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyward_jobs_last_success_timestamp_seconds",
			Help: "Unix time at which a run of the background jobs last ended without error.",
		}),
	}
	for _, job := range []string{jobPurge, jobRotationTimeout, jobMaxKeyAge} {
		m.jobItems.WithLabelValues(job) // every job shows, at 0, from the start
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.duration, m.jobRuns, m.jobFailures, m.jobItems, m.jobLastOK,
		&censusCollector{store: store, log: log, opts: opts},
		// Several writes share a commit (group commit): commits over writes is what each
		// write cost in fsyncs.
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "keyward_store_commits_total",
			Help: "Write transactions committed; concurrent writes share one.",
		}, func() float64 { c, _ := store.WriteCounts(); return float64(c) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "keyward_store_writes_total",
			Help: "Write requests acknowledged: committed, and their caller told so.",
		}, func() float64 { _, w := store.WriteCounts(); return float64(w) }),
	)
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		// A collector that fails must not hide the others; the census reports its own failure
		// as keyward_store_up 0 and never fails the gathering.
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelError),
	})
	return m
}

// Handler writes every metric in the Prometheus text format (or what the scraper negotiates).
// It does no authorization of its own: the caller must put it behind some.
func (m *Metrics) Handler() http.Handler { return m.handler }

// Instrument counts the requests next answers and times them, labelled with pattern: the
// route table's pattern, never the request's path. Methods outside the standard set count as
// "unknown", so a client cannot make new series by inventing methods.
func (m *Metrics) Instrument(pattern string, next http.Handler) http.Handler {
	route := prometheus.Labels{"route": pattern}
	return promhttp.InstrumentHandlerDuration(m.duration.MustCurryWith(route),
		promhttp.InstrumentHandlerCounter(m.requests.MustCurryWith(route), next))
}

// The job label's values.
const (
	jobPurge           = "purge"
	jobRotationTimeout = "rotation_timeout"
	jobMaxKeyAge       = "max_key_age"
)

// Jobs is what one run of the background jobs did.
type Jobs struct {
	Purged       int // keys whose material was destroyed
	TimedOut     int // delivered rotations failed for taking too long
	AgeRotations int // rotations requested because a key reached the maximum age
}

// ObserveJobs counts one run of the background jobs: what it did, even when it then failed
// (the items done before the error were done), and whether it failed.
func (m *Metrics) ObserveJobs(done Jobs, err error) {
	m.jobRuns.Inc()
	m.jobItems.WithLabelValues(jobPurge).Add(float64(done.Purged))
	m.jobItems.WithLabelValues(jobRotationTimeout).Add(float64(done.TimedOut))
	m.jobItems.WithLabelValues(jobMaxKeyAge).Add(float64(done.AgeRotations))
	if err != nil {
		m.jobFailures.Inc()
		return
	}
	m.jobLastOK.SetToCurrentTime()
}

var (
	storeUpDesc = prometheus.NewDesc("keyward_store_up",
		"Whether the last census of the fleet could read the database (1) or not (0).", nil, nil)
	devicesDesc = prometheus.NewDesc("keyward_devices",
		"Devices by escrow status (escrowed, pending, failed, notAvailable), as of the last census.", []string{"escrow_status"}, nil)
	keysDesc = prometheus.NewDesc("keyward_recovery_keys",
		"Escrowed recovery keys by status (active, superseded, purged), as of the last census.", []string{"status"}, nil)
	censusAgeDesc = prometheus.NewDesc("keyward_census_age_seconds",
		"Seconds since the census the device and key counts come from was taken.", nil, nil)
)

// censusCollector reports the fleet's counts, taken from the store at most once per TTL.
//
// When the store fails, the scrape still answers: keyward_store_up is 0 and the device and key
// counts are left out (stale counts would look current). A 503 instead would make Prometheus
// mark the whole target down and drop the process, HTTP and job metrics exactly when they help
// to find out what is wrong, and "server down" could not be told from "database down".
type censusCollector struct {
	store Store
	log   *slog.Logger
	opts  Options

	// mu is held during a census, so concurrent scrapes wait for one query instead of each
	// running their own.
	mu     sync.Mutex
	at     time.Time // when the cached census was taken; zero: none yet
	census escrow.Census
	err    error
}

func (c *censusCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- storeUpDesc
	ch <- devicesDesc
	ch <- keysDesc
	ch <- censusAgeDesc
}

func (c *censusCollector) Collect(ch chan<- prometheus.Metric) {
	census, at, err := c.current()
	if err != nil {
		ch <- prometheus.MustNewConstMetric(storeUpDesc, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(storeUpDesc, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(censusAgeDesc, prometheus.GaugeValue, c.opts.Now().Sub(at).Seconds())
	for st, n := range census.Devices {
		ch <- prometheus.MustNewConstMetric(devicesDesc, prometheus.GaugeValue, float64(n), string(st))
	}
	for st, n := range census.Keys {
		ch <- prometheus.MustNewConstMetric(keysDesc, prometheus.GaugeValue, float64(n), string(st))
	}
}

// current returns the cached census, taking a new one when the cache is older than the TTL.
// A failure is cached for the TTL too: a struggling database is not asked again on every scrape.
func (c *censusCollector) current() (escrow.Census, time.Time, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.opts.Now()
	if !c.at.IsZero() && now.Sub(c.at) < c.opts.CensusTTL {
		return c.census, c.at, c.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.CensusTimeout)
	defer cancel()
	c.census, c.err = c.store.Census(ctx)
	c.at = now
	if c.err != nil {
		c.log.LogAttrs(ctx, slog.LevelError, "metrics: census of the fleet failed", slog.String("error", c.err.Error()))
	}
	return c.census, c.at, c.err
}
