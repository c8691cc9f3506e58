package store_test

import (
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

func hashOf(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func (e *env) user(email string, role escrow.Role, tags ...string) escrow.User {
	e.t.Helper()
	u, err := e.db.CreateUser(e.ctx, adminOrigin, escrow.NewUser{Email: email, Role: role, ScopeTags: tags})
	if err != nil {
		e.t.Fatalf("CreateUser: %v", err)
	}
	return u
}

func userOrigin(u escrow.User) escrow.Origin {
	return escrow.Origin{Actor: escrow.Actor{Type: escrow.ActorUser, ID: u.ID, Name: u.Email}, Source: escrow.SourceAdminPortal, IP: "192.0.2.7"}
}

func TestSessions(t *testing.T) {
	e := newEnv(t)
	u := e.user("Helpdesk@Example.com", escrow.RoleHelpdesk, "lab")
	const idle = 30 * time.Minute

	t.Run("a session stands for its user, as the users table says now", func(t *testing.T) {
		if err := e.db.StartSession(e.ctx, userOrigin(u), u.ID, hashOf("tok-1"), "password", 12*time.Hour); err != nil {
			t.Fatal(err)
		}
		p, err := e.db.SessionPrincipal(e.ctx, hashOf("tok-1"), idle)
		if err != nil {
			t.Fatal(err)
		}
		if p.Actor != (escrow.Actor{Type: escrow.ActorUser, ID: u.ID, Name: u.Email}) || p.Role != escrow.RoleHelpdesk || p.Email != u.Email ||
			strings.Join(p.ScopeTags, ",") != "lab" {
			t.Fatalf("principal %+v", p)
		}
		if _, err := e.db.SetUserRole(e.ctx, adminOrigin, u.ID, escrow.RoleAuditor, nil); err != nil {
			t.Fatal(err)
		}
		if p, err = e.db.SessionPrincipal(e.ctx, hashOf("tok-1"), idle); err != nil || p.Role != escrow.RoleAuditor || len(p.ScopeTags) != 0 {
			t.Fatalf("after a role change: %+v %v", p, err)
		}
		ev := e.events(escrow.AuditFilter{Action: "auth.signin"})
		if len(ev) != 1 || ev[0].Outcome != escrow.OutcomeSuccess || ev[0].Actor.ID != u.ID || ev[0].IP != "192.0.2.7" {
			t.Fatalf("sign-in events %+v", ev)
		}
	})

	t.Run("unknown tokens are refused", func(t *testing.T) {
		_, err := e.db.SessionPrincipal(e.ctx, hashOf("never issued"), idle)
		wantCode(t, err, escrow.CodeUnauthorized)
		wantCode(t, e.db.StartSession(e.ctx, userOrigin(u), u.ID, []byte("short"), "password", time.Hour), escrow.CodeInternal)
	})

	t.Run("idle expiry", func(t *testing.T) {
		if err := e.db.StartSession(e.ctx, userOrigin(u), u.ID, hashOf("tok-idle"), "password", 12*time.Hour); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(20 * time.Minute)
		if _, err := e.db.SessionPrincipal(e.ctx, hashOf("tok-idle"), idle); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(20 * time.Minute) // 40 min after sign-in, 20 after the last use
		if _, err := e.db.SessionPrincipal(e.ctx, hashOf("tok-idle"), idle); err != nil {
			t.Fatalf("used 20 minutes ago: %v", err)
		}
		e.clock.Advance(idle)
		_, err := e.db.SessionPrincipal(e.ctx, hashOf("tok-idle"), idle)
		wantCode(t, err, escrow.CodeUnauthorized)
		e.clock.Advance(-idle) // deleted, not merely refused
		_, err = e.db.SessionPrincipal(e.ctx, hashOf("tok-idle"), idle)
		wantCode(t, err, escrow.CodeUnauthorized)
	})

	t.Run("absolute expiry", func(t *testing.T) {
		if err := e.db.StartSession(e.ctx, userOrigin(u), u.ID, hashOf("tok-abs"), "sso", time.Hour); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			e.clock.Advance(19 * time.Minute)
			if _, err := e.db.SessionPrincipal(e.ctx, hashOf("tok-abs"), idle); err != nil {
				t.Fatal(err)
			}
		}
		e.clock.Advance(3 * time.Minute) // an hour after sign-in, though used 3 minutes ago
		_, err := e.db.SessionPrincipal(e.ctx, hashOf("tok-abs"), idle)
		wantCode(t, err, escrow.CodeUnauthorized)
	})

	t.Run("sign-out deletes the session and is audited once", func(t *testing.T) {
		if err := e.db.StartSession(e.ctx, userOrigin(u), u.ID, hashOf("tok-out"), "password", time.Hour); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := e.db.EndSession(e.ctx, userOrigin(u), hashOf("tok-out")); err != nil {
				t.Fatal(err)
			}
		}
		_, err := e.db.SessionPrincipal(e.ctx, hashOf("tok-out"), idle)
		wantCode(t, err, escrow.CodeUnauthorized)
		if n := e.countEvents(escrow.AuditFilter{Action: "auth.signout"}); n != 1 {
			t.Fatalf("%d sign-out events, want 1", n)
		}
	})

	t.Run("a failed sign-in is recorded", func(t *testing.T) {
		if err := e.db.SignInDenied(e.ctx, escrow.Origin{Actor: escrow.Actor{Type: escrow.ActorUser, Name: "who@example.com"}, Source: escrow.SourceAdminPortal}, "wrong email or password"); err != nil {
			t.Fatal(err)
		}
		ev := e.events(escrow.AuditFilter{Action: "auth.signin", Outcome: "denied"})
		if len(ev) != 1 || ev[0].Actor.Name != "who@example.com" {
			t.Fatalf("denied events %+v", ev)
		}
	})

	t.Run("credentials", func(t *testing.T) {
		got, hash, err := e.db.UserCredentials(e.ctx, " HELPDESK@example.com ")
		if err != nil || got.ID != u.ID || hash != "" {
			t.Fatalf("UserCredentials: %+v %q %v", got, hash, err)
		}
		_, _, err = e.db.UserCredentials(e.ctx, "nobody@example.com")
		wantCode(t, err, escrow.CodeNotFound)
	})
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t)
	hit := func(bucket string) time.Duration {
		t.Helper()
		wait, err := e.db.HitRateLimit(e.ctx, bucket, 3, 15*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return wait
	}
	for i := range 3 {
		if w := hit("signin:account:a@example.com"); w != 0 {
			t.Fatalf("attempt %d refused (wait %v)", i+1, w)
		}
	}
	w := hit("signin:account:a@example.com")
	if w <= 0 || w > 15*time.Minute {
		t.Fatalf("fourth attempt: wait %v", w)
	}
	if w := hit("signin:account:b@example.com"); w != 0 {
		t.Fatal("buckets are not independent")
	}
	e.clock.Advance(w)
	if w := hit("signin:account:a@example.com"); w != 0 {
		t.Fatalf("a new window still refuses (wait %v)", w)
	}
	if _, err := e.db.HitRateLimit(e.ctx, "x", 0, time.Minute); err == nil {
		t.Fatal("a limit of 0 was accepted")
	}

	t.Run("undo takes back one attempt of the current window", func(t *testing.T) {
		for range 3 {
			hit("undo")
			if err := e.db.UndoRateLimit(e.ctx, "undo"); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 3 {
			if w := hit("undo"); w != 0 {
				t.Fatalf("attempt %d after three taken back: wait %v", i+1, w)
			}
		}
		if w := hit("undo"); w == 0 {
			t.Fatal("the fourth counted attempt was not refused")
		}
		// Nothing to take back goes below zero, and an unknown bucket is no error.
		for range 10 {
			if err := e.db.UndoRateLimit(e.ctx, "never-hit"); err != nil {
				t.Fatal(err)
			}
		}
		e.clock.Advance(15 * time.Minute)
		if err := e.db.UndoRateLimit(e.ctx, "never-hit"); err != nil {
			t.Fatal(err)
		}
	})
}

func TestSSOLogins(t *testing.T) {
	e := newEnv(t)
	if err := e.db.SaveSSOLogin(e.ctx, hashOf("state-1"), "nonce-1", "verifier-1", "/audit", 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	nonce, verifier, next, err := e.db.TakeSSOLogin(e.ctx, hashOf("state-1"))
	if err != nil || nonce != "nonce-1" || verifier != "verifier-1" || next != "/audit" {
		t.Fatalf("TakeSSOLogin: %q %q %q %v", nonce, verifier, next, err)
	}
	_, _, _, err = e.db.TakeSSOLogin(e.ctx, hashOf("state-1"))
	wantCode(t, err, escrow.CodeNotFound) // once only

	if err := e.db.SaveSSOLogin(e.ctx, hashOf("state-2"), "n", "v", "", 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(11 * time.Minute)
	_, _, _, err = e.db.TakeSSOLogin(e.ctx, hashOf("state-2"))
	wantCode(t, err, escrow.CodeNotFound) // too late
	_, _, _, err = e.db.TakeSSOLogin(e.ctx, hashOf("never"))
	wantCode(t, err, escrow.CodeNotFound)
}

func TestSSOUser(t *testing.T) {
	e := newEnv(t)
	o := escrow.Origin{Source: escrow.SourceAdminPortal, IP: "192.0.2.8"}
	u, err := e.db.SSOUser(e.ctx, o, "Ada@Example.com", escrow.RoleAdmin)
	if err != nil || u.Role != escrow.RoleAdmin || u.Email != "Ada@Example.com" {
		t.Fatalf("first sign-on: %+v %v", u, err)
	}
	again, err := e.db.SSOUser(e.ctx, o, "ada@example.com", escrow.RoleAdmin)
	if err != nil || again.ID != u.ID {
		t.Fatalf("second sign-on: %+v %v", again, err)
	}
	if _, err := e.db.SSOUser(e.ctx, o, "ada@example.com", escrow.RoleUser); err != nil {
		t.Fatal(err)
	}
	created := e.events(escrow.AuditFilter{Action: escrow.ActionUserCreate})
	changed := e.events(escrow.AuditFilter{Action: "user.role"})
	if len(created) != 1 || created[0].Actor.ID != u.ID || len(changed) != 1 || !strings.Contains(changed[0].Detail, "admin -> user") {
		t.Fatalf("events: created %+v, changed %+v", created, changed)
	}
	if _, hash, _ := e.db.UserCredentials(e.ctx, "ada@example.com"); hash != "" {
		t.Fatal("a single sign-on user has a password")
	}
	for _, bad := range []string{"", "no-at-sign", "two words@example.com"} {
		_, err := e.db.SSOUser(e.ctx, o, bad, escrow.RoleUser)
		wantCode(t, err, escrow.CodeInvalid)
	}
	_, err = e.db.SSOUser(e.ctx, o, "x@example.com", "root")
	wantCode(t, err, escrow.CodeInvalid)
}

func TestUsersAndRoles(t *testing.T) {
	e := newEnv(t)
	admin := e.user("admin@example.com", escrow.RoleAdmin)
	e.user("Zoe@example.com", escrow.RoleUser)
	e.user("bob@example.com", escrow.RoleUser)
	users, err := e.db.ListUsers(e.ctx)
	if err != nil || len(users) != 3 || users[0].Email != "admin@example.com" || users[1].Email != "bob@example.com" || users[2].Email != "Zoe@example.com" {
		t.Fatalf("ListUsers: %+v %v", users, err)
	}
	_, err = e.db.SetUserRole(e.ctx, adminOrigin, admin.ID, escrow.RoleUser, nil)
	wantCode(t, err, escrow.CodeConflict)
	_, err = e.db.SetUserRole(e.ctx, adminOrigin, "no-such-user", escrow.RoleUser, nil)
	wantCode(t, err, escrow.CodeNotFound)
	_, err = e.db.SetUserRole(e.ctx, adminOrigin, users[1].ID, "root", nil)
	wantCode(t, err, escrow.CodeInvalid)
	_, err = e.db.SetUserRole(e.ctx, adminOrigin, users[1].ID, escrow.RoleHelpdesk, []string{"lab", "bad\ttag"})
	wantCode(t, err, escrow.CodeInvalid)
	bob, err := e.db.SetUserRole(e.ctx, adminOrigin, users[1].ID, escrow.RoleAdmin, nil)
	if err != nil || bob.Role != escrow.RoleAdmin {
		t.Fatalf("promote: %+v %v", bob, err)
	}
	if _, err := e.db.SetUserRole(e.ctx, adminOrigin, admin.ID, escrow.RoleHelpdesk, []string{"lab"}); err != nil {
		t.Fatalf("with another admin, the first may step down: %v", err)
	}
	ev := e.events(escrow.AuditFilter{Action: "user.role"})
	if len(ev) != 2 || ev[1].Detail != "user admin@example.com role admin -> helpdesk limited to tags lab" {
		t.Fatalf("role events %+v", ev)
	}
}

func TestSearchDevices(t *testing.T) {
	e := newEnv(t)
	a := e.enroll("LT-ALICE", "Alice@Example.com")
	e.escrowPassword(a, osVolume, xts128)
	e.report(a, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID)}})
	b := e.enroll("LT-BOB", "bob@example.com")
	e.escrowPassword(b, osVolume, cbc128)
	e.report(b, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, cbc128.keyID)}})
	e.enroll("KIOSK_1", "")
	e.enroll("KIOSKX1", "")
	for i := range 5 {
		e.enroll(fmt.Sprintf("WS-%02d", i), "staff@example.com")
	}
	search := func(scope escrow.Scope, text string, status escrow.EscrowStatus) []string {
		t.Helper()
		var names []string
		cursor := ""
		for {
			ds, next, err := e.db.SearchDevices(e.ctx, helpdeskOrigin, escrow.DeviceFilter{Scope: scope, EscrowStatus: status, Cursor: cursor, Limit: 2}, text)
			if err != nil {
				t.Fatalf("SearchDevices(%q): %v", text, err)
			}
			for _, d := range ds {
				names = append(names, d.Name)
			}
			if next == "" {
				return names
			}
			cursor = next
		}
	}
	tests := []struct {
		text   string
		scope  escrow.Scope
		status escrow.EscrowStatus
		want   string
	}{
		{"lt-", allScope, "", "LT-ALICE,LT-BOB"},
		{"alice@example", allScope, "", "LT-ALICE"},
		{xts128.keyID[:8], allScope, "", "LT-ALICE"},
		{strings.ToLower(cbc128.keyID), allScope, "", "LT-BOB"},
		{"kiosk_", allScope, "", "KIOSK_1"}, // _ is a character here, not a wildcard
		{"%", allScope, "", ""},
		{"ws-", allScope, "", "WS-00,WS-01,WS-02,WS-03,WS-04"},
		{"ws-", allScope, escrow.StatusEscrowed, ""},
		{"", allScope, escrow.StatusEscrowed, "LT-ALICE,LT-BOB"},
		{"lt-", escrow.Scope{OwnerUPN: "bob@EXAMPLE.com"}, "", "LT-BOB"},
		{xts128.keyID[:8], escrow.Scope{OwnerUPN: "bob@example.com"}, "", ""},
		{"lt-", escrow.Scope{}, "", ""},
	}
	for _, tt := range tests {
		if got := strings.Join(search(tt.scope, tt.text, tt.status), ","); got != tt.want {
			t.Errorf("search %q in %+v (status %q) = %q, want %q", tt.text, tt.scope, tt.status, got, tt.want)
		}
	}
	ev := e.events(escrow.AuditFilter{Action: escrow.ActionKeyList})
	if len(ev) != 3 || ev[0].Source != escrow.SourceAdminPortal || !strings.Contains(ev[0].Detail, xts128.keyID[:8]) || ev[1].KeyID != cbc128.keyID {
		t.Fatalf("key searches must be audited as key listings: %+v", ev)
	}
	_, _, err := e.db.SearchDevices(e.ctx, helpdeskOrigin, escrow.DeviceFilter{Scope: allScope, Cursor: "garbage!"}, "lt")
	wantCode(t, err, escrow.CodeInvalid)
	_, _, err = e.db.SearchDevices(e.ctx, helpdeskOrigin, escrow.DeviceFilter{Scope: allScope}, "a\x00b")
	wantCode(t, err, escrow.CodeInvalid)
}

func TestDeviceRotations(t *testing.T) {
	e := newEnv(t)
	a := e.enroll("LT-ALICE", "alice@example.com")
	e.escrowPassword(a, osVolume, xts128)
	e.report(a, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID)}})
	if _, err := e.db.RequestRotation(e.ctx, adminOrigin, a.DeviceID, "", "first", allowDevice); err != nil {
		t.Fatal(err)
	}
	rs, err := e.db.DeviceRotations(e.ctx, adminPrincipal, a.DeviceID, 10)
	if err != nil || len(rs) != 1 || rs[0].Reason != "first" || rs[0].KeyID != xts128.keyID || rs[0].Status != escrow.RotationRequested {
		t.Fatalf("DeviceRotations: %+v %v", rs, err)
	}
	bob := escrow.Principal{Actor: escrow.Actor{Type: escrow.ActorUser, ID: "bob"}, Role: escrow.RoleUser, Email: "bob@example.com"}
	_, err = e.db.DeviceRotations(e.ctx, bob, a.DeviceID, 10)
	wantCode(t, err, escrow.CodeForbidden)
	_, err = e.db.DeviceRotations(e.ctx, adminPrincipal, "6f1c2a4e-0000-4000-8000-000000000000", 10)
	wantCode(t, err, escrow.CodeNotFound)
}

// TestHitRateLimitsAllOrNone: a request's buckets are counted together or not at all, so a
// refused attempt is never a failure in its other buckets.
func TestHitRateLimitsAllOrNone(t *testing.T) {
	e := newEnv(t)
	hit := func(limits map[string]int) time.Duration {
		t.Helper()
		wait, err := e.db.HitRateLimits(e.ctx, 15*time.Minute, limits)
		if err != nil {
			t.Fatal(err)
		}
		return wait
	}
	if w := hit(map[string]int{"account": 1, "address": 3}); w != 0 {
		t.Fatalf("first attempt refused (wait %v)", w)
	}
	for range 5 {
		if w := hit(map[string]int{"account": 1, "address": 3}); w <= 0 {
			t.Fatal("the account's second attempt was not refused")
		}
	}
	// The refusals did not count against the address: it has two attempts left.
	for i := range 2 {
		if w := hit(map[string]int{"other": 5, "address": 3}); w != 0 {
			t.Fatalf("address attempt %d refused (wait %v)", i+2, w)
		}
	}
	if w := hit(map[string]int{"another": 5, "address": 3}); w <= 0 {
		t.Fatal("the address's fourth attempt was not refused")
	}
	// Nor did that refusal count against "another".
	if w := hit(map[string]int{"another": 1}); w != 0 {
		t.Fatalf("a refused attempt counted in its other bucket (wait %v)", w)
	}
}

// TestUpdateSettingsIncidentMode: switching incident mode on and off is its own audit event,
// and its end must lie in the future, at most escrow.MaxIncident ahead.
func TestUpdateSettingsIncidentMode(t *testing.T) {
	e := newEnv(t)
	now := e.clock.Now()
	for _, bad := range []time.Time{now.Add(-time.Minute), now, now.Add(escrow.MaxIncident + time.Second)} {
		_, err := e.db.UpdateSettings(e.ctx, adminOrigin, map[string]string{"incidentModeUntil": bad.Format(time.RFC3339)})
		if escrow.ErrorCode(err) != escrow.CodeInvalid || !strings.HasPrefix(escrow.ErrorMessage(err), "incidentModeUntil: ") {
			t.Errorf("incidentModeUntil %v: %v, want invalid", bad, err)
		}
	}
	until := now.Add(6 * time.Hour).Truncate(time.Second)
	set, err := e.db.UpdateSettings(e.ctx, adminOrigin, map[string]string{"incidentModeUntil": until.Format(time.RFC3339), "selfServiceLimitPerAddress": "300"})
	if err != nil || !set.IncidentOn(now) || set.SelfServiceLimit.PerAddress != 300 {
		t.Fatalf("starting incident mode: %+v %v", set, err)
	}
	if set, err = e.db.Settings(e.ctx); err != nil || !set.IncidentModeUntil.Equal(until) {
		t.Fatalf("stored incidentModeUntil %v %v", set.IncidentModeUntil, err)
	}
	if _, err := e.db.UpdateSettings(e.ctx, cliOrigin, map[string]string{"incidentModeUntil": ""}); err != nil {
		t.Fatal(err)
	}
	start := e.events(escrow.AuditFilter{Action: escrow.ActionIncidentStart})
	stop := e.events(escrow.AuditFilter{Action: escrow.ActionIncidentStop})
	upd := e.events(escrow.AuditFilter{Action: escrow.ActionSettingsUpdate})
	if len(start) != 1 || start[0].Actor != adminOrigin.Actor || !strings.Contains(start[0].Detail, until.UTC().Format(time.RFC3339)) {
		t.Errorf("incident.start events %+v", start)
	}
	if len(stop) != 1 || stop[0].Actor != cliOrigin.Actor || stop[0].Source != escrow.SourceCLI {
		t.Errorf("incident.stop events %+v", stop)
	}
	if len(upd) != 1 || upd[0].Detail != "selfServiceLimitPerAddress 30 -> 300" {
		t.Errorf("settings.update events %+v", upd)
	}
}
