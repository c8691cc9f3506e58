package metrics

import (
	"context"
	"log/slog"
	"time"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/prometheus/client_golang/prometheus"
)

// DeliveryStore is what the delivery metrics read: where each sink's delivery of the audit
// trail stands, from the database, so every server reports the same lag whichever of them
// delivers.
type DeliveryStore interface {
	DeliveryStates(ctx context.Context, sinks []string) ([]escrow.DeliveryState, error)
}

var (
	deliveryLagDesc = prometheus.NewDesc("keyward_audit_delivery_lag_events",
		"Audit events not yet accepted by the sink: the trail's newest seq minus the sink's cursor.", []string{"sink"}, nil)
	deliveryLagAgeDesc = prometheus.NewDesc("keyward_audit_delivery_lag_seconds",
		"Age of the oldest audit event the sink has not accepted; 0 when it is caught up.", []string{"sink"}, nil)
	deliveryUpDesc = prometheus.NewDesc("keyward_audit_delivery_up",
		"Whether the sink's last delivery attempt (on whichever server delivers it) succeeded (1) or failed (0).", []string{"sink"}, nil)
)

// UseDelivery adds the metrics of the audit trail's delivery to sinks (names from a closed set:
// syslog, webhook, email): per sink, the lag in events and in seconds read from store at each
// scrape, whether it is up, and the events delivered and attempts failed by this server.
func (m *Metrics) UseDelivery(store DeliveryStore, sinks []string, log *slog.Logger) {
	m.delivered = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyward_audit_delivered_total",
		Help: "Audit events this server delivered to the sink and the sink accepted.",
	}, []string{"sink"})
	m.deliveryFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyward_audit_delivery_failures_total",
		Help: "Attempts of this server to deliver audit events to the sink that failed.",
	}, []string{"sink"})
	for _, s := range sinks {
		m.delivered.WithLabelValues(s)
		m.deliveryFailures.WithLabelValues(s)
	}
	m.reg.MustRegister(m.delivered, m.deliveryFailures,
		&deliveryCollector{store: store, sinks: sinks, log: log, now: m.now, timeout: m.censusTimeout})
}

// DeliveredEvents counts events a sink accepted.
func (m *Metrics) DeliveredEvents(sink string, events int) {
	if m.delivered != nil {
		m.delivered.WithLabelValues(sink).Add(float64(events))
	}
}

// DeliveryFailed counts one failed attempt to deliver to a sink.
func (m *Metrics) DeliveryFailed(sink string) {
	if m.deliveryFailures != nil {
		m.deliveryFailures.WithLabelValues(sink).Inc()
	}
}

// deliveryCollector reads the sinks' states at each scrape: a few lookups by primary key,
// whatever the length of the trail. A failure leaves the series out (and is logged) rather than
// report a lag that is not known.
type deliveryCollector struct {
	store   DeliveryStore
	sinks   []string
	log     *slog.Logger
	now     func() time.Time
	timeout time.Duration
}

func (c *deliveryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- deliveryLagDesc
	ch <- deliveryLagAgeDesc
	ch <- deliveryUpDesc
}

func (c *deliveryCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	states, err := c.store.DeliveryStates(ctx, c.sinks)
	if err != nil {
		c.log.LogAttrs(ctx, slog.LevelError, "metrics: reading the audit delivery state failed", slog.String("error", err.Error()))
		return
	}
	now := c.now()
	for _, st := range states {
		up := 1.0
		if !st.FailingSince.IsZero() {
			up = 0
		}
		ch <- prometheus.MustNewConstMetric(deliveryLagDesc, prometheus.GaugeValue, float64(st.Lag()), st.Sink)
		ch <- prometheus.MustNewConstMetric(deliveryLagAgeDesc, prometheus.GaugeValue, st.LagAge(now).Seconds(), st.Sink)
		ch <- prometheus.MustNewConstMetric(deliveryUpDesc, prometheus.GaugeValue, up, st.Sink)
	}
}
