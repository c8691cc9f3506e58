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
	if strings.Contains(text, deviceID) {
		t.Error("the metrics carry the device ID")
	}
}
