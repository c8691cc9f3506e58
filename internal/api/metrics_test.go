package api_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/bitlockertest"
	"github.com/keyward/keyward/internal/escrow"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape is one answer of GET /metrics, parsed.
type scrape struct {
	text     string
	families map[string]*dto.MetricFamily
}

func (e *env) scrape(token string) scrape {
	e.t.Helper()
	r := e.must(200, e.do("GET", "/metrics", token, nil))
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		e.t.Fatalf("Content-Type %q, want the Prometheus text format", ct)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(r.body))
	if err != nil {
		e.t.Fatalf("metrics do not parse: %v\n%s", err, r.body)
	}
	return scrape{text: string(r.body), families: fams}
}

// value is the value of the series of name whose labels include want; 0 when there is none, so
// that a counter not yet incremented compares as 0. A histogram answers its count.
func (s scrape) value(name string, want map[string]string) float64 {
	f, ok := s.families[name]
	if !ok {
		return 0
	}
	for _, m := range f.GetMetric() {
		if !hasLabels(m, want) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return 0
}

func (s scrape) has(name string, want map[string]string) bool {
	for _, m := range s.families[name].GetMetric() {
		if hasLabels(m, want) {
			return true
		}
	}
	return false
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if v, ok := want[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

// TestMetricsCountRequestsAndFleet scrapes after requests and escrows: the request counters
// move by exactly the requests made, labelled with the route pattern; the device and key gauges
// match the fleet; and nothing identifying or secret shows anywhere in the answer.
func TestMetricsCountRequestsAndFleet(t *testing.T) {
	e := newEnv(t)
	samples := bitlockertest.Samples(t)
	before := e.scrape(e.admin)
	if before.value("keyward_store_up", nil) != 1 {
		t.Fatalf("keyward_store_up is not 1 on a healthy store:\n%s", before.text)
	}

	escrowed := newAgent(e, "LT-ESCROWED", "alice@example.com")
	escrowed.addVolume("C", "C:", samples[0].Password, samples[0].KeyID)
	escrowed.report()
	pending := e.enroll("LT-PENDING", "bob@example.com")
	off := e.enroll("LT-OFF", "")
	e.report(off, volumeReport{VolumeID: "C", MountPoint: "C:", VolumeType: "operatingSystem", ProtectionStatus: "off", EncryptionStatus: "fullyDecrypted"})
	for range 3 {
		e.must(200, e.do("GET", "/api/devices/"+escrowed.d.ID, e.admin, nil))
	}
	e.must(404, e.do("GET", "/api/devices/"+strings.ToLower(samples[1].KeyID), e.admin, nil))
	e.must(404, e.do("GET", "/api/no-such-thing/"+pending.ID, e.admin, nil))
	e.must(401, e.do("GET", "/api/devices", "", nil))
	e.clock.Advance(16 * time.Second) // past the census cache

	after := e.scrape(e.admin)
	delta := func(name string, labels map[string]string) float64 {
		return after.value(name, labels) - before.value(name, labels)
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"keyward_http_requests_total", map[string]string{"route": "GET /api/devices/{deviceId}", "method": "get", "code": "200"}, 3},
		{"keyward_http_requests_total", map[string]string{"route": "GET /api/devices/{deviceId}", "method": "get", "code": "404"}, 1},
		{"keyward_http_requests_total", map[string]string{"route": "PUT /api/agent/keys/{keyId}", "method": "put", "code": "201"}, 1},
		{"keyward_http_requests_total", map[string]string{"route": "POST /api/agent/enroll", "method": "post", "code": "201"}, 3},
		{"keyward_http_requests_total", map[string]string{"route": "POST /api/agent/report", "method": "post", "code": "200"}, 2},
		{"keyward_http_requests_total", map[string]string{"route": "GET /api/devices", "method": "get", "code": "401"}, 1},
		{"keyward_http_requests_total", map[string]string{"route": "/api/", "method": "get", "code": "404"}, 1},
		{"keyward_http_requests_total", map[string]string{"route": "GET /metrics", "method": "get", "code": "200"}, 1},
		{"keyward_http_request_duration_seconds", map[string]string{"route": "GET /api/devices/{deviceId}"}, 4},
		{"keyward_http_request_duration_seconds", map[string]string{"route": "PUT /api/agent/keys/{keyId}"}, 1},
	} {
		if got := delta(c.name, c.labels); got != c.want {
			t.Errorf("%s%v moved by %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	// The devices by escrow status, by the names the API uses, every status present.
	for status, want := range map[escrow.EscrowStatus]float64{
		escrow.StatusEscrowed: 1, escrow.StatusPending: 1, escrow.StatusNotAvailable: 1, escrow.StatusFailed: 0,
	} {
		labels := map[string]string{"escrow_status": string(status)}
		if !after.has("keyward_devices", labels) {
			t.Errorf("keyward_devices has no series for %s", status)
		}
		if got := after.value("keyward_devices", labels); got != want {
			t.Errorf("keyward_devices{escrow_status=%q} = %v, want %v", status, got, want)
		}
	}
	if got := after.value("keyward_recovery_keys", map[string]string{"status": "active"}); got != 1 {
		t.Errorf("keyward_recovery_keys{status=active} = %v, want 1", got)
	}

	// Route labels are patterns: no raw path of any request made shows up as a label.
	for _, m := range after.families["keyward_http_requests_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "route" && strings.Contains(l.GetValue(), "/api/devices/") && !strings.Contains(l.GetValue(), "{") {
				t.Errorf("route label %q is a path, not a pattern", l.GetValue())
			}
		}
	}
	// Nothing that identifies a device, a key or a person, and no secret, anywhere.
	forbidden := []string{
		escrowed.d.ID, pending.ID, off.ID, escrowed.d.Token, pending.Token, e.admin,
		samples[0].KeyID, strings.ToLower(samples[0].KeyID), samples[0].Password, strings.ReplaceAll(samples[0].Password, "-", ""),
		samples[1].KeyID, strings.ToLower(samples[1].KeyID),
		"LT-ESCROWED", "LT-PENDING", "alice@example.com", "admin@example.com", "127.0.0.1",
	}
	for _, s := range forbidden {
		if strings.Contains(after.text, s) {
			t.Errorf("the metrics carry %q", s)
		}
	}
}

// TestMetricsAuthorization: only admins and auditors read the metrics. Without a valid API
// token the answer is 401, for any other role 403; refused attempts are audited as for every
// other route, and scrapes themselves are not.
func TestMetricsAuthorization(t *testing.T) {
	e := newEnv(t)
	auditor := e.person(escrow.RoleAuditor, "audit@example.com")
	helpdesk := e.person(escrow.RoleHelpdesk, "hd@example.com")
	user := e.person(escrow.RoleUser, "alice@example.com")
	d := e.enroll("LT-0042", "alice@example.com")

	for _, c := range []struct {
		name  string
		token string
		want  int
	}{
		{"no token", "", 401},
		{"not a token", "hunter2", 401},
		{"unknown API token", "kwt_0123456789abcdef_" + strings.Repeat("A", 43), 401},
		{"device token", d.Token, 401},
		{"helpdesk: may read keys, so not metrics", helpdesk, 403},
		{"user", user, 403},
		{"auditor", auditor, 200},
		{"admin", e.admin, 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := e.do("GET", "/metrics", c.token, nil)
			if r.status != c.want {
				t.Fatalf("status %d, want %d: %s", r.status, c.want, r.body)
			}
			if c.want != 200 && strings.Contains(string(r.body), "keyward_") {
				t.Fatalf("a refused scrape carries metrics: %s", r.body)
			}
		})
	}

	denied := 0
	for _, ev := range e.auditEvents("outcome=denied") {
		switch ev.Action {
		case "metrics.read":
			denied++
			if ev.Actor.Type != "token" {
				t.Errorf("denied metrics.read by %+v", ev.Actor)
			}
		case escrow.ActionAuth:
			if !strings.Contains(ev.Detail, "GET /metrics") {
				t.Errorf("denied token event %q", ev.Detail)
			}
		}
	}
	if denied != 2 {
		t.Errorf("%d denied metrics.read events, want 2 (helpdesk, user)", denied)
	}
	for _, ev := range e.auditEvents("outcome=success") {
		if strings.HasPrefix(ev.Action, "metrics") {
			t.Errorf("a scrape was audited: %+v", ev)
		}
	}
}

// TestMetricsCensusCached: the device counts come from a census reused for 15 s, so scrapes
// cannot load the database; after that the next scrape sees the change.
func TestMetricsCensusCached(t *testing.T) {
	e := newEnv(t)
	pending := map[string]string{"escrow_status": "pending"}
	if got := e.scrape(e.admin).value("keyward_devices", pending); got != 0 {
		t.Fatalf("pending = %v on an empty fleet", got)
	}
	e.enroll("LT-0042", "")
	e.clock.Advance(14 * time.Second)
	if got := e.scrape(e.admin).value("keyward_devices", pending); got != 0 {
		t.Fatalf("pending = %v within the cache time, want the cached 0", got)
	}
	e.clock.Advance(2 * time.Second)
	if got := e.scrape(e.admin).value("keyward_devices", pending); got != 1 {
		t.Fatalf("pending = %v after the cache time, want 1", got)
	}
}

// TestMetricsStoreDown: when the census cannot read the database the scrape still answers,
// with keyward_store_up 0 and the other metrics, and without device counts that would be stale.
func TestMetricsStoreDown(t *testing.T) {
	e := newEnv(t)
	e.enroll("LT-0042", "")
	// Break what the census reads and nothing that authentication needs.
	raw := openRaw(t, e.dir)
	if _, err := raw.Exec(`ALTER TABLE status_counts RENAME TO status_counts_gone`); err != nil {
		t.Fatal(err)
	}
	s := e.scrape(e.admin)
	if got := s.value("keyward_store_up", nil); got != 0 || !s.has("keyward_store_up", nil) {
		t.Fatalf("keyward_store_up = %v, want 0:\n%s", got, s.text)
	}
	if _, ok := s.families["keyward_devices"]; ok {
		t.Error("device counts reported while the store is down")
	}
	for _, name := range []string{"keyward_http_requests_total", "go_goroutines", "keyward_jobs_runs_total"} {
		if _, ok := s.families[name]; !ok {
			t.Errorf("%s missing while the store is down", name)
		}
	}
	if !strings.Contains(e.logs.String(), "census of the fleet failed") {
		t.Error("the census failure is not logged")
	}

	// Repaired, the next census after the cache time counts again.
	if _, err := raw.Exec(`ALTER TABLE status_counts_gone RENAME TO status_counts`); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(16 * time.Second)
	s = e.scrape(e.admin)
	if s.value("keyward_store_up", nil) != 1 || s.value("keyward_devices", map[string]string{"escrow_status": "pending"}) != 1 {
		t.Fatalf("after repair:\n%s", s.text)
	}
}
