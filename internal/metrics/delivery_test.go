package metrics_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/metrics"
	"github.com/keyward/keyward/internal/store"
)

// TestDeliveryMetrics: every configured sink shows from the start; the counts follow what the
// runner reports; when the database cannot be read, the lag is left out (not reported as 0)
// and the rest of the scrape still answers.
func TestDeliveryMetrics(t *testing.T) {
	db, err := store.OpenSQLite(context.Background(), t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New(db, slog.New(slog.DiscardHandler), metrics.Options{})
	m.UseDelivery(db, []string{"syslog", "webhook"}, slog.New(slog.DiscardHandler))
	scrape := func() string {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if rec.Code != 200 {
			t.Fatalf("scrape: %d", rec.Code)
		}
		return rec.Body.String()
	}
	check := func(text string, want []string, absent []string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(text, w+"\n") {
				t.Errorf("metrics lack %s", w)
			}
		}
		for _, a := range absent {
			if strings.Contains(text, a) {
				t.Errorf("metrics show %s", a)
			}
		}
	}
	check(scrape(), []string{
		`keyward_audit_delivery_lag_events{sink="syslog"} 0`, `keyward_audit_delivery_lag_seconds{sink="webhook"} 0`,
		`keyward_audit_delivery_up{sink="syslog"} 1`, `keyward_audit_delivered_total{sink="webhook"} 0`,
		`keyward_audit_delivery_failures_total{sink="syslog"} 0`,
	}, nil)
	m.DeliveredEvents("syslog", 3)
	m.DeliveryFailed("webhook")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	check(scrape(), []string{`keyward_audit_delivered_total{sink="syslog"} 3`, `keyward_audit_delivery_failures_total{sink="webhook"} 1`},
		[]string{"keyward_audit_delivery_lag_events", "keyward_audit_delivery_up"})
}
