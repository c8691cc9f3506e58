package web_test

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/web"
)

func TestSignInAndOut(t *testing.T) {
	e := newEnv(t)
	admin := e.person(escrow.RoleAdmin, "admin@example.com")

	t.Run("a wrong password is refused and audited without the password", func(t *testing.T) {
		r := e.post("/signin", "", url.Values{"email": {"admin@example.com"}, "password": {"not the password at all"}}).must(t, http.StatusUnauthorized)
		if !strings.Contains(r.body, "The email address or the password is wrong") || strings.Contains(r.body, "not the password at all") {
			t.Fatalf("refusal page: %s", shortBody(r.body))
		}
		if r.header.Get("Set-Cookie") != "" {
			t.Fatalf("a refused sign-in set a cookie: %s", r.header.Get("Set-Cookie"))
		}
		ev := e.events(escrow.AuditFilter{Action: "auth.signin", Outcome: "denied"})
		if len(ev) != 1 || ev[0].Actor.ID != admin.ID || ev[0].Source != escrow.SourceAdminPortal || ev[0].IP != "127.0.0.1" {
			t.Fatalf("denied sign-in events: %+v", ev)
		}
		if strings.Contains(ev[0].Detail+ev[0].Reason, "not the password") {
			t.Fatal("the audit trail holds the password tried")
		}
	})

	t.Run("an unknown account gets the same answer", func(t *testing.T) {
		r := e.post("/signin", "", url.Values{"email": {"nobody@example.com"}, "password": {"not the password at all"}}).must(t, http.StatusUnauthorized)
		if !strings.Contains(r.body, "The email address or the password is wrong") {
			t.Fatalf("refusal page: %s", shortBody(r.body))
		}
	})

	var cookie string
	t.Run("the right password starts a session", func(t *testing.T) {
		r := e.post("/signin", "", url.Values{"email": {"ADMIN@example.com"}, "password": {testPassword}, "next": {"/audit?action=key.read"}}).must(t, http.StatusSeeOther)
		if loc := r.header.Get("Location"); loc != "/audit?action=key.read" {
			t.Fatalf("sign-in sent the browser to %q", loc)
		}
		c := sessionCookie(t, r)
		if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Secure {
			t.Fatalf("session cookie over plain HTTP: %+v (want HttpOnly, SameSite=Lax, Path=/, not Secure)", c)
		}
		cookie = c.Value
		e.get("/devices", cookie).must(t, http.StatusOK)
		ev := e.events(escrow.AuditFilter{Action: "auth.signin", Outcome: "success"})
		if len(ev) != 1 || ev[0].Actor.ID != admin.ID || !strings.Contains(ev[0].Detail, "password") {
			t.Fatalf("sign-in events: %+v", ev)
		}
	})

	t.Run("sign-in never redirects to another site", func(t *testing.T) {
		// Each is a full sign-in (a password check); the cases of localPath are in its own test.
		for _, next := range []string{"//evil.example/x"} {
			r := e.do(request{method: http.MethodPost, path: "/signin", form: url.Values{"email": {"admin@example.com"}, "password": {testPassword}, "next": {next}}})
			if loc := r.header.Get("Location"); loc != "/devices" {
				t.Errorf("next=%q: sent to %q", next, loc)
			}
		}
	})

	t.Run("sign-out ends the session on the server", func(t *testing.T) {
		r := e.post("/signout", cookie, url.Values{}).must(t, http.StatusSeeOther)
		if c := sessionCookie(t, r); c.MaxAge >= 0 {
			t.Errorf("sign-out did not clear the cookie: %+v", c)
		}
		// The old cookie, replayed, is worth nothing now.
		r = e.get("/devices", cookie).must(t, http.StatusSeeOther)
		if !strings.HasPrefix(r.header.Get("Location"), "/signin") {
			t.Fatalf("after sign-out: %v", r.header)
		}
		if ev := e.events(escrow.AuditFilter{Action: "auth.signout"}); len(ev) != 1 || ev[0].Actor.ID != admin.ID {
			t.Fatalf("sign-out events: %+v", ev)
		}
	})

	t.Run("no session, no page: GET goes to sign-in and comes back", func(t *testing.T) {
		r := e.get("/devices?q=LT", "").must(t, http.StatusSeeOther)
		if loc := r.header.Get("Location"); loc != "/signin?next=%2Fdevices%3Fq%3DLT" {
			t.Fatalf("Location %q", loc)
		}
		e.get("/devices", "forged-cookie-value").must(t, http.StatusSeeOther)
	})
}

func TestSessionExpiry(t *testing.T) {
	e := newEnv(t, func(c *web.Config, _ string) { c.SessionIdle, c.SessionMaxAge = 30*time.Minute, 2*time.Hour })
	e.person(escrow.RoleAdmin, "admin@example.com")

	t.Run("idle", func(t *testing.T) {
		c := e.session("admin@example.com")
		e.clock.Advance(29 * time.Minute)
		e.get("/devices", c).must(t, http.StatusOK)
		e.clock.Advance(29 * time.Minute) // each use restarts the idle time
		e.get("/devices", c).must(t, http.StatusOK)
		e.clock.Advance(31 * time.Minute)
		e.get("/devices", c).must(t, http.StatusSeeOther)
		e.clock.Advance(-60 * time.Minute) // the expired session is gone, not just refused
		e.get("/devices", c).must(t, http.StatusSeeOther)
	})

	t.Run("absolute", func(t *testing.T) {
		// Sessions in the test helper last 12 h; sign in for real to get the configured 2 h.
		r := e.post("/signin", "", url.Values{"email": {"admin@example.com"}, "password": {testPassword}}).must(t, http.StatusSeeOther)
		c := sessionCookie(t, r).Value
		for range 7 {
			e.clock.Advance(15 * time.Minute)
			e.get("/devices", c).must(t, http.StatusOK)
		}
		e.clock.Advance(16 * time.Minute) // 2 h 1 min after sign-in, never idle
		e.get("/devices", c).must(t, http.StatusSeeOther)
	})
}

// TestSignInCountsFailuresPerAccountAndAddress: only failures count, per account from one
// address and per address. An attacker's failures lock out neither the account's owner (at
// another address) nor the attacker's own right password for ever, and successes never count.
func TestSignInCountsFailuresPerAccountAndAddress(t *testing.T) {
	e := newEnv(t)
	e.person(escrow.RoleAdmin, "admin@example.com")
	e.settings(map[string]string{"signInLimitPerAccount": "10", "signInLimitPerAddress": "14", "signInLimitWindow": "15m"})
	right := url.Values{"email": {"admin@example.com"}, "password": {testPassword}}
	wrong := url.Values{"email": {"admin@example.com"}, "password": {"wrong password, again"}}
	signIn := func(from string, form url.Values) response {
		t.Helper()
		return e.do(request{method: http.MethodPost, path: "/signin", form: form, from: from})
	}

	// Successes are not failures: the owner signs in more often than the limit.
	for i := range 12 {
		if r := signIn("127.0.0.1", right); r.status != http.StatusSeeOther {
			t.Fatalf("sign-in %d with the right password: status %d", i+1, r.status)
		}
	}

	// The attacker fails 10 times on the account; the 11th attempt from there is refused
	// before the password is looked at, the right password included.
	for i := range 10 {
		signIn("127.0.0.2", wrong).must(t, http.StatusUnauthorized)
		_ = i
	}
	r := signIn("127.0.0.2", right).must(t, http.StatusTooManyRequests)
	retry, err := strconv.Atoi(r.header.Get("Retry-After"))
	if err != nil || retry < 1 || retry > 15*60 {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
	if !strings.Contains(r.body, "Too many attempts") || r.header.Get("Set-Cookie") != "" {
		t.Fatalf("429 page: %s", shortBody(r.body))
	}

	// The owner, from an address that has not been failing, still signs in.
	signIn("127.0.0.1", right).must(t, http.StatusSeeOther)
	signIn("127.0.0.3", right).must(t, http.StatusSeeOther)

	// The per-address limit stays: the attacker's address has 4 failures left for any account.
	for _, who := range []string{"b@example.com", "c@example.com", "d@example.com", "e@example.com"} {
		signIn("127.0.0.2", url.Values{"email": {who}, "password": {"guess guess guess"}}).must(t, http.StatusUnauthorized)
	}
	signIn("127.0.0.2", url.Values{"email": {"f@example.com"}, "password": {"guess guess guess"}}).must(t, http.StatusTooManyRequests)
	signIn("127.0.0.1", right).must(t, http.StatusSeeOther)

	// The window passes.
	e.clock.Advance(16 * time.Minute)
	signIn("127.0.0.2", right).must(t, http.StatusSeeOther)
}

// TestSignInRefusalsRecordedOnce: over the limit, only the first refusal of a window from an
// address is an audit event, so a flood cannot fill the trail.
func TestSignInRefusalsRecordedOnce(t *testing.T) {
	e := newEnv(t)
	e.person(escrow.RoleAdmin, "admin@example.com")
	e.settings(map[string]string{"signInLimitPerAccount": "2", "signInLimitPerAddress": "3"})
	denied := func() int { return len(e.events(escrow.AuditFilter{Action: "auth.signin", Outcome: "denied"})) }
	wrong := url.Values{"email": {"admin@example.com"}, "password": {"wrong password, twice"}}
	e.post("/signin", "", wrong).must(t, http.StatusUnauthorized)
	e.post("/signin", "", wrong).must(t, http.StatusUnauthorized)
	if n := denied(); n != 2 {
		t.Fatalf("%d denied sign-ins recorded for 2 failures", n)
	}
	for range 20 {
		e.post("/signin", "", wrong).must(t, http.StatusTooManyRequests)
		e.post("/signin", "", url.Values{"email": {"other@example.com"}, "password": {"x"}})
	}
	ev := e.events(escrow.AuditFilter{Action: "auth.signin", Outcome: "denied"})
	if last := ev[len(ev)-2]; len(ev) != 4 || !strings.Contains(last.Detail, "too many sign-in attempts") || !strings.Contains(last.Detail, "not recorded") {
		t.Fatalf("%d denied sign-ins recorded after 40 more attempts, want 1 refusal and other@'s failure (refused attempts are no failures): %+v", len(ev)-2, ev)
	}
	// The next window's first refusal is recorded again.
	e.clock.Advance(15 * time.Minute)
	for range 5 {
		e.post("/signin", "", wrong)
	}
	if n := denied(); n != 4+2+1 {
		t.Fatalf("%d denied sign-ins after the next window's 2 failures and 3 refusals, want 7", n)
	}
}

func TestSelfServiceRateLimit(t *testing.T) {
	e := newEnv(t)
	e.settings(map[string]string{"selfServiceLimitPerPerson": "2"})
	e.person(escrow.RoleUser, "alice@example.com")
	k := samples(t, 1)[0]
	e.enroll("LT-ALICE", "alice@example.com", k)
	c := e.session("alice@example.com")
	form := url.Values{"keyId": {k.KeyID[:8]}, "reason": {"forgotten-pin"}}
	e.post("/my/key", c, form).must(t, http.StatusOK)
	e.post("/my/key", c, form).must(t, http.StatusOK)
	r := e.post("/my/key", c, form).must(t, http.StatusTooManyRequests)
	if r.header.Get("Retry-After") == "" || strings.Contains(r.body, k.Password) {
		t.Fatalf("429: %v\n%s", r.header, shortBody(r.body))
	}
}
