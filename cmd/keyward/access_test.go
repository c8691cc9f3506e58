package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestTakingAccessAway runs the access commands beside a running server: each change applies
// to the server's next request, and each is one audit event from the command line.
func TestTakingAccessAway(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir, nil)
	admin, _, _, _ := setUp(t, r.URL(), dir)
	run := cliRunner(t, dir)
	run(0, "users", "add", "--email", "leaver@example.com", "--role", "helpdesk")
	leaver := strings.TrimSpace(run(0, "tokens", "create", "--user", "leaver@example.com", "--name", "laptop"))
	mustCall(t, 200, "GET", r.URL()+"/api/devices", leaver, "")

	t.Run("users disable and enable", func(t *testing.T) {
		if out := run(0, "users", "disable", "--email", "LEAVER@example.com"); !strings.HasSuffix(out, "\tleaver@example.com\tdisabled\n") {
			t.Fatalf("users disable printed %q", out)
		}
		mustCall(t, 401, "GET", r.URL()+"/api/devices", leaver, "")
		if out := run(0, "users", "list"); !strings.Contains(out, "leaver@example.com  helpdesk  disabled 20") {
			t.Fatalf("users list printed %q", out)
		}
		if out := run(1, "users", "disable", "--email", "admin@example.com"); !strings.Contains(out, "last admin") {
			t.Fatalf("disabling the last admin: %q", out)
		}
		run(1, "users", "disable", "--email", "nobody@example.com")
		run(2, "users", "enable")
		run(0, "users", "enable", "--email", "leaver@example.com")
		mustCall(t, 200, "GET", r.URL()+"/api/devices", leaver, "")
	})

	t.Run("tokens list and revoke", func(t *testing.T) {
		out := run(0, "tokens", "list", "--user", "leaver@example.com")
		if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[1], leaver[4:20]+"  leaver@example.com  \"laptop\"") {
			t.Fatalf("tokens list printed %q", out)
		}
		if strings.Contains(out, leaver[21:]) {
			t.Fatal("tokens list printed a secret")
		}
		run(2, "tokens", "revoke", "--id", leaver)
		run(0, "tokens", "revoke", "--id", leaver[4:20])
		mustCall(t, 401, "GET", r.URL()+"/api/devices", leaver, "")
		run(1, "tokens", "revoke", "--id", leaver[4:20])
		run(1, "tokens", "revoke", "--id", "0123456789abcdef")
		if out := run(0, "tokens", "list"); strings.Count(out, "\n") != 3 {
			t.Fatalf("tokens list printed %q", out)
		}
	})

	t.Run("enroll-tokens list and revoke", func(t *testing.T) {
		enroll := strings.TrimSpace(run(0, "enroll-tokens", "create"))
		out := run(0, "enroll-tokens", "list")
		if !strings.Contains(out, enroll[4:20]+"  unlimited") || strings.Contains(out, enroll[21:]) {
			t.Fatalf("enroll-tokens list printed %q", out)
		}
		run(0, "enroll-tokens", "revoke", "--id", enroll[4:20])
		mustCall(t, 401, "POST", r.URL()+"/api/agent/enroll", "", `{"enrollmentToken":"`+enroll+`","hostname":"LT-0043"}`)
	})

	// One event per change, from the command line.
	var events struct {
		Items []struct{ Action, Outcome, Source string }
	}
	b := mustCall(t, 200, "GET", r.URL()+"/api/devices/security/bitlocker/keys/audit?source=cli&limit=1000", admin, "")
	if err := json.Unmarshal(b, &events); err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, e := range events.Items {
		count[e.Action+" "+e.Outcome]++
	}
	for _, want := range []string{"user.disable success", "user.enable success", "token.revoke success", "enrollment_token.revoke success"} {
		if count[want] != 1 {
			t.Errorf("%s: %d events, want 1 (%v)", want, count[want], count)
		}
	}
}
