package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// signIn posts the portal's sign-in form and answers the status and the Retry-After header,
// without following the redirect of a success.
func signIn(t testing.TB, base, forwardedFor, email, pw string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("POST", base+"/signin", strings.NewReader(url.Values{"email": {email}, "password": {pw}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if forwardedFor != "" {
		req.Header.Set("X-Forwarded-For", forwardedFor)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode, res.Header.Get("Retry-After")
}

// peakRSS reads the process's peak resident memory (VmHWM) in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc on this system: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}

// TestSignInFloodStaysBounded floods the real `keyward serve` with 48 bad sign-ins at once, on
// 48 accounts so that no per-account limit helps. Each password check allocates 64 MiB: without
// a bound 48 of them took the server past 3 GB. The server must stay under 512 MB, answer the
// checks it has no room for with 429 and Retry-After, and sign the right password in after.
func TestSignInFloodStaysBounded(t *testing.T) {
	dir := t.TempDir()
	p := serveProcess(t, "--data-dir", dir)
	if code, _, stderr := cli(t, dir, "a long sign-in password\n", "users", "add", "--email", "admin@example.com", "--role", "admin", "--password-stdin"); code != 0 {
		t.Fatalf("users add: %s", stderr)
	}
	const n = 48
	statuses := make([]int, n)
	retries := make([]string, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			statuses[i], retries[i] = signIn(t, p.url, "", fmt.Sprintf("flood-%d@example.com", i), "not the password, but long")
		})
	}
	close(start)
	wg.Wait()
	peak := peakRSS(t, p.cmd.Process.Pid)
	t.Logf("peak RSS after %d parallel sign-ins: %d MB", n, peak>>20)
	if peak >= 512<<20 {
		t.Errorf("peak RSS %d MB, want under 512 MB", peak>>20)
	}
	var refused, checked int
	for i, st := range statuses {
		switch st {
		case http.StatusUnauthorized:
			checked++
		case http.StatusTooManyRequests:
			refused++
			if s, err := strconv.Atoi(retries[i]); err != nil || s < 1 || s > 60 {
				t.Errorf("429 with Retry-After %q", retries[i])
			}
		default:
			t.Errorf("sign-in %d: status %d", i, st)
		}
	}
	t.Logf("%d checked, %d refused as busy", checked, refused)
	if refused == 0 || checked == 0 {
		t.Errorf("%d checked and %d refused: want some of each", checked, refused)
	}
	if st, _ := signIn(t, p.url, "", "admin@example.com", "a long sign-in password"); st != http.StatusSeeOther {
		t.Errorf("after the flood the right password answers %d", st)
	}
}

// TestSignInLockoutNeedsFailuresFromTheSameAddress runs behind a trusted proxy, so the server
// sees the addresses the proxy names: an attacker's 10 failures from one address lock the
// account out there only, while its owner at another address signs in.
func TestSignInLockoutNeedsFailuresFromTheSameAddress(t *testing.T) {
	// The limits count in fixed 15-minute windows of the real clock here: a run that crossed a
	// boundary between the failures and the check would start a new window and prove nothing.
	const window = 15 * time.Minute
	if left := time.Until(time.Now().Truncate(window).Add(window)); left < time.Minute {
		time.Sleep(left + time.Second)
	}
	dir := t.TempDir()
	r := start(t, dir, map[string]string{"KEYWARD_TRUSTED_PROXIES": "127.0.0.1"})
	if code, _, stderr := cli(t, dir, "a long sign-in password\n", "users", "add", "--email", "admin@example.com", "--role", "admin", "--password-stdin"); code != 0 {
		t.Fatalf("users add: %s", stderr)
	}
	for i := range 10 {
		if st, _ := signIn(t, r.URL(), "203.0.113.66", "admin@example.com", fmt.Sprintf("guess number %d", i)); st != http.StatusUnauthorized {
			t.Fatalf("failure %d: status %d", i+1, st)
		}
	}
	if st, retry := signIn(t, r.URL(), "203.0.113.66", "admin@example.com", "a long sign-in password"); st != http.StatusTooManyRequests || retry == "" {
		t.Fatalf("the attacker's address after 10 failures: %d, Retry-After %q", st, retry)
	}
	if st, _ := signIn(t, r.URL(), "198.51.100.10", "admin@example.com", "a long sign-in password"); st != http.StatusSeeOther {
		t.Fatalf("the owner at another address: status %d, want 303", st)
	}
}

// TestEnrollmentLimitedPerAddress sends 200 made-up enrollment tokens from one address: past
// the per-address limit they are refused with 429 and Retry-After, and the audit trail holds
// the failures up to the limit and one refusal, not 200 events. Good enrollments never count,
// and another address is not affected.
func TestEnrollmentLimitedPerAddress(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir, map[string]string{"KEYWARD_TRUSTED_PROXIES": "127.0.0.1"})
	admin, _, _, _ := setUp(t, r.URL(), dir)
	code, out, stderr := cli(t, dir, "", "enroll-tokens", "create", "--uses", "100", "--expires", "1d")
	if code != 0 {
		t.Fatalf("enroll-tokens create: %s", stderr)
	}
	good := strings.TrimSpace(out)
	enroll := func(from, tok, host string) (int, string) {
		t.Helper()
		req, err := http.NewRequest("POST", r.URL()+"/api/agent/enroll", strings.NewReader(fmt.Sprintf(`{"enrollmentToken":%q,"hostname":%q}`, tok, host)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Forwarded-For", from)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode, res.Header.Get("Retry-After")
	}
	denied := func() int {
		t.Helper()
		var ev struct{ Items []struct{ IP, Detail string } }
		b := mustCall(t, 200, "GET", r.URL()+"/api/devices/security/bitlocker/keys/audit?action=device.enroll&outcome=denied&limit=1000", admin, "")
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Fatal(err)
		}
		return len(ev.Items)
	}

	// A site enrolls more devices from one address than the failure limit (30).
	for i := range 35 {
		if st, _ := enroll("198.51.100.20", good, fmt.Sprintf("LT-%04d", i)); st != http.StatusCreated {
			t.Fatalf("good enrollment %d: status %d", i+1, st)
		}
	}

	var unauthorized, limited int
	for i := range 200 {
		st, retry := enroll("203.0.113.9", fmt.Sprintf("kwe_%016x_%s", i, strings.Repeat("A", 43)), "EVIL")
		switch st {
		case http.StatusUnauthorized:
			unauthorized++
		case http.StatusTooManyRequests:
			limited++
			if s, err := strconv.Atoi(retry); err != nil || s < 1 || s > 15*60 {
				t.Fatalf("429 with Retry-After %q", retry)
			}
		default:
			t.Fatalf("bad token %d: status %d", i, st)
		}
	}
	if unauthorized != 30 || limited != 170 {
		t.Errorf("200 bad tokens: %d refused as invalid, %d as too many; want 30 and 170", unauthorized, limited)
	}
	if n := denied(); n != 31 {
		t.Errorf("%d denied enrollments recorded, want the 30 failures and 1 refusal", n)
	}
	// Over the limit the address is refused even with a good token; other addresses are not.
	if st, _ := enroll("203.0.113.9", good, "LT-LATE"); st != http.StatusTooManyRequests {
		t.Errorf("good token from the flooding address: %d, want 429", st)
	}
	if st, _ := enroll("198.51.100.21", good, "LT-OTHER"); st != http.StatusCreated {
		t.Errorf("good token from another address: %d, want 201", st)
	}
}

// TestIncidentModeAndLimitSettings sets the limits through PUT /api/settings (refusing bad
// values with a 400 naming the setting, changing nothing) and switches incident mode on and
// off from the command line and the API, each switch one audit event naming who did it.
func TestIncidentModeAndLimitSettings(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir, nil)
	admin, _, _, _ := setUp(t, r.URL(), dir)
	settings := func() map[string]any {
		t.Helper()
		var m map[string]any
		if err := json.Unmarshal(mustCall(t, 200, "GET", r.URL()+"/api/settings", admin, ""), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	before := settings()
	if before["signInLimitPerAccount"] != 10.0 || before["selfServiceLimitPerAddress"] != 30.0 || before["enrollmentLimitWindow"] != "15m" ||
		before["incidentModeUntil"] != nil {
		t.Fatalf("default settings: %v", before)
	}
	for _, bad := range []struct{ body, name string }{
		{`{"signInLimitPerAccount":"10"}`, "signInLimitPerAccount"},
		{`{"signInLimitPerAddress":0}`, "signInLimitPerAddress"},
		{`{"selfServiceLimitPerPerson":2.5}`, "selfServiceLimitPerPerson"},
		{`{"selfServiceLimitPerAddress":-3}`, "selfServiceLimitPerAddress"},
		{`{"enrollmentLimitPerAddress":1e12}`, "enrollmentLimitPerAddress"},
		{`{"signInLimitWindow":"soon"}`, "signInLimitWindow"},
		{`{"selfServiceLimitWindow":0}`, "selfServiceLimitWindow"},
		{`{"enrollmentLimitWindow":"15m","signInLimitPerAccount":true}`, "signInLimitPerAccount"},
		{`{"incidentModeUntil":"tomorrow"}`, "incidentModeUntil"},
		{`{"incidentModeUntil":"2020-01-01T00:00:00Z"}`, "incidentModeUntil"},
		{`{"incidentModeUntil":"` + time.Now().Add(8*24*time.Hour).UTC().Format(time.RFC3339) + `"}`, "incidentModeUntil"},
		{`{"incidentModeUntil":6}`, "incidentModeUntil"},
	} {
		st, b := call(t, "PUT", r.URL()+"/api/settings", admin, bad.body)
		if st != 400 || !strings.Contains(string(b), `"message":"`+bad.name+`: `) {
			t.Errorf("PUT %s: %d %s, want 400 naming %s", bad.body, st, b, bad.name)
		}
	}
	if after := settings(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("refused changes changed the settings:\n%v\n%v", before, after)
	}
	var set map[string]any
	if err := json.Unmarshal(mustCall(t, 200, "PUT", r.URL()+"/api/settings", admin, `{"signInLimitPerAccount":5,"selfServiceLimitWindow":"2h"}`), &set); err != nil ||
		set["signInLimitPerAccount"] != 5.0 || set["selfServiceLimitWindow"] != "2h" {
		t.Fatalf("PUT of limits answered %v %v", set, err)
	}

	run := cliRunner(t, dir)
	if out := run(0, "help"); !strings.Contains(out, "keyward incident start --for DURATION") || !strings.Contains(out, "keyward incident stop") {
		t.Errorf("usage does not name the incident commands")
	}
	run(2, "incident", "start")
	run(2, "incident", "start", "--for", "8d")
	run(2, "incident", "stop", "--for", "1h")
	out := run(0, "incident", "start", "--for", "6h")
	until, ok := strings.CutPrefix(strings.TrimSpace(out), "incident mode on until ")
	end, err := time.Parse(time.RFC3339, until)
	if !ok || err != nil || time.Until(end) < 5*time.Hour || time.Until(end) > 6*time.Hour+time.Minute {
		t.Fatalf("incident start printed %q", out)
	}
	if got := settings()["incidentModeUntil"]; got != until {
		t.Fatalf("incidentModeUntil after incident start: %v, want %s", got, until)
	}
	if out := run(0, "incident", "stop"); strings.TrimSpace(out) != "incident mode off" {
		t.Fatalf("incident stop printed %q", out)
	}
	if got := settings()["incidentModeUntil"]; got != nil {
		t.Fatalf("incidentModeUntil after incident stop: %v", got)
	}
	soon := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	mustCall(t, 200, "PUT", r.URL()+"/api/settings", admin, `{"incidentModeUntil":"`+soon+`"}`)
	mustCall(t, 200, "PUT", r.URL()+"/api/settings", admin, `{"incidentModeUntil":null}`)

	var ev struct {
		Items []struct {
			Action, Source, Outcome, Detail string
			Actor                           struct{ Type, Name string }
		}
	}
	b := mustCall(t, 200, "GET", r.URL()+"/api/devices/security/bitlocker/keys/audit?limit=1000", admin, "")
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ev.Items { // newest first
		if strings.HasPrefix(e.Action, "incident.") {
			got = append(got, e.Action+" "+e.Source+" "+e.Actor.Name)
			if e.Outcome != "success" || (e.Action == "incident.start" && !strings.Contains(e.Detail, "until 20")) {
				t.Errorf("incident event %+v", e)
			}
		}
	}
	want := []string{"incident.stop api admin@example.com", "incident.start api admin@example.com", "incident.stop cli ", "incident.start cli "}
	if len(got) != len(want) {
		t.Fatalf("incident events %q, want %q", got, want)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("incident event %d: %q, want %q…", i, got[i], want[i])
		}
	}
}
