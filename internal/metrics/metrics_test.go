package metrics_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/metrics"
	"github.com/keyward/keyward/internal/store"
)

// newMetrics returns metrics on a real, empty SQLite store, opened without a sealer as the
// admin commands open it: the census reads no key material. The census of a fleet is tested
// through the API (internal/api); here it only has to answer.
func newMetrics(t testing.TB) *metrics.Metrics {
	t.Helper()
	db, err := store.OpenSQLite(context.Background(), t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return metrics.New(db, slog.New(slog.DiscardHandler), metrics.Options{})
}

// TestInstrumentLabels: the route label is the pattern given, whatever the path; invented
// methods count as "unknown" so that a client cannot create series.
func TestInstrumentLabels(t *testing.T) {
	m := newMetrics(t)
	mux := http.NewServeMux()
	mux.Handle("/things/{id}", m.Instrument("/things/{id}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	})))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, method := range []string{"GET", "BREW", "X-SECRET-42"} {
		req, err := http.NewRequest(method, srv.URL+"/things/6b1f0a52-8f7e-4a57-9a0e-4f1c3f7f2d10", nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	text := rec.Body.String()
	for _, want := range []string{
		`keyward_http_requests_total{code="418",method="get",route="/things/{id}"} 1`,
		`keyward_http_requests_total{code="418",method="unknown",route="/things/{id}"} 2`,
		`keyward_http_request_duration_seconds_count{route="/things/{id}"} 3`,
		`keyward_store_up 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, bad := range []string{"6b1f0a52", "BREW", "X-SECRET-42", "brew"} {
		if strings.Contains(text, bad) {
			t.Errorf("metrics carry %q", bad)
		}
	}
}

// BenchmarkInstrument measures what the instrumentation adds to one request: compare
// ns/op of the two sub-benchmarks.
func BenchmarkInstrument(b *testing.B) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	})
	for _, c := range []struct {
		name string
		h    http.Handler
	}{
		{"bare", ok},
		{"instrumented", newMetrics(b).Instrument("GET /api/devices/{deviceId}", ok)},
	} {
		b.Run(c.name, func(b *testing.B) {
			req := httptest.NewRequest("GET", "/api/devices/6b1f0a52-8f7e-4a57-9a0e-4f1c3f7f2d10", nil)
			w := discard{http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				c.h.ServeHTTP(w, req)
			}
		})
	}
}

// discard is a ResponseWriter that costs nothing, so the benchmark measures the handlers only.
type discard struct{ h http.Header }

func (d discard) Header() http.Header         { return d.h }
func (d discard) Write(b []byte) (int, error) { return len(b), nil }
func (d discard) WriteHeader(int)             {}
