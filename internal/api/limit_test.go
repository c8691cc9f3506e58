package api_test

import (
	"strconv"
	"strings"
	"testing"
)

// Invalid tokens from one address are recorded up to the limit; after it the API answers 429
// with Retry-After and records only the first refusal, while a valid token from the same
// address keeps working.
func TestInvalidTokensBounded(t *testing.T) {
	e := newEnv(t)
	const limit = 30 // authFailureLimit
	bad := "kwt_0a0b0c0d0e0f0a0b_" + strings.Repeat("A", 43)
	before := len(e.auditEvents("action=auth.token&outcome=denied"))
	for range limit {
		e.must(401, e.do("GET", "/api/devices", bad, nil))
	}
	for i := range 5 {
		r := e.must(429, e.do("GET", "/api/devices", bad, nil))
		if r.errorCode(t) != "rate_limited" {
			t.Fatalf("refusal %d: code %q, want rate_limited", i, r.errorCode(t))
		}
		secs, err := strconv.Atoi(r.header.Get("Retry-After"))
		if err != nil || secs <= 0 || secs > 15*60 {
			t.Fatalf("refusal %d: Retry-After %q, want 1..900 seconds", i, r.header.Get("Retry-After"))
		}
	}
	events := e.auditEvents("action=auth.token&outcome=denied")
	if got := len(events) - before; got != limit+1 {
		t.Fatalf("%d denied auth.token events recorded, want %d (the limit and the first refusal)", got, limit+1)
	}
	if !strings.Contains(events[0].Detail, "too many invalid tokens") {
		t.Errorf("the newest event does not say the address is refused: %q", events[0].Detail)
	}
	// A valid token from the same address is not limited.
	e.must(200, e.do("GET", "/api/devices", e.admin, nil))
}
