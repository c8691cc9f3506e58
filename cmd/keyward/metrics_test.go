package main

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestServeMetrics: `keyward serve` serves GET /metrics through the API (not the portal), counts
// the portal's routes by pattern beside the API's, and counts the background jobs it runs.
func TestServeMetrics(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir, nil)
	admin, deviceID, _, _ := setUp(t, r.URL(), dir)

	status, b := call(t, "GET", r.URL()+"/metrics", "", "")
	if status != 401 || !strings.Contains(string(b), `"unauthorized"`) {
		t.Fatalf("GET /metrics without a token: %d %s, want the API's 401", status, b)
	}
	mustCall(t, 200, "GET", r.URL()+"/signin", "", "")
	mustCall(t, 200, "GET", r.URL()+"/api/devices/"+deviceID, admin, "")

	// The jobs run once at start, in the background: wait for the first run to be counted.
	runs := regexp.MustCompile(`(?m)^keyward_jobs_runs_total (\d+)`)
	var text string
	for deadline := time.Now().Add(10 * time.Second); ; {
		text = string(mustCall(t, 200, "GET", r.URL()+"/metrics", admin, ""))
		if m := runs.FindStringSubmatch(text); m != nil {
			if n, _ := strconv.Atoi(m[1]); n >= 1 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no background job run counted:\n%s", text)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []string{
		`keyward_http_requests_total{code="200",method="get",route="GET /signin"} 1`,
		`keyward_http_requests_total{code="200",method="get",route="GET /api/devices/{deviceId}"} 1`,
		`keyward_http_requests_total{code="401",method="get",route="GET /metrics"} 1`,
		`keyward_jobs_failures_total 0`,
		`keyward_store_up 1`,
		`keyward_devices{escrow_status="pending"} 1`,
		`process_start_time_seconds`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// This server's writes so far (the device's enrollment among them) were acknowledged after
	// commits that they shared or not: never more commits than writes.
	commits, writes := counter(t, text, "keyward_store_commits_total"), counter(t, text, "keyward_store_writes_total")
	if writes < 2 || commits < 1 || commits > writes {
		t.Errorf("keyward_store_commits_total %d, keyward_store_writes_total %d", commits, writes)
	}
	if strings.Contains(text, deviceID) {
		t.Error("the metrics carry the device ID")
	}
}

// counter returns the value of a series in metrics text: a name, with its labels if it has any.
func counter(t testing.TB, text, name string) int64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("metrics lack %s", name)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return int64(v)
}
