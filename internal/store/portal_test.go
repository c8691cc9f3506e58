package store_test

import (
	"bytes"
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
	want := escrow.SSOLogin{Nonce: "nonce-1", Verifier: "verifier-1", ReturnTo: "/audit", SetupHash: hashOf("setup")}
	if err := e.db.SaveSSOLogin(e.ctx, hashOf("state-1"), want, 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	got, err := e.db.TakeSSOLogin(e.ctx, hashOf("state-1"))
	if err != nil || got.Nonce != want.Nonce || got.Verifier != want.Verifier || got.ReturnTo != want.ReturnTo || !bytes.Equal(got.SetupHash, want.SetupHash) {
		t.Fatalf("TakeSSOLogin: %+v %v", got, err)
	}
	_, err = e.db.TakeSSOLogin(e.ctx, hashOf("state-1"))
	wantCode(t, err, escrow.CodeNotFound) // once only

	if err := e.db.SaveSSOLogin(e.ctx, hashOf("state-2"), escrow.SSOLogin{Nonce: "n", Verifier: "v"}, 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, err := e.db.TakeSSOLogin(e.ctx, hashOf("state-2")); err != nil || got.SetupHash != nil {
		t.Fatalf("an ordinary sign-on: %+v %v", got, err)
	}
	if err := e.db.SaveSSOLogin(e.ctx, hashOf("state-3"), escrow.SSOLogin{Nonce: "n", Verifier: "v"}, 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(11 * time.Minute)
	_, err = e.db.TakeSSOLogin(e.ctx, hashOf("state-3"))
	wantCode(t, err, escrow.CodeNotFound) // too late
	_, err = e.db.TakeSSOLogin(e.ctx, hashOf("never"))
	wantCode(t, err, escrow.CodeNotFound)
}

const testIssuer = "https://idp.example.com"

// signOn is a single sign-on of sub with a verified email and a role claim.
func signOn(sub, email string, role escrow.Role) escrow.SSOSignOn {
	return escrow.SSOSignOn{Issuer: testIssuer, Subject: sub, Email: email, EmailVerified: true, Role: role, RoleClaimed: true}
}

func TestSSOUser(t *testing.T) {
	e := newEnv(t)
	o := escrow.Origin{Source: escrow.SourceAdminPortal, IP: "192.0.2.8"}
	u, err := e.db.SSOUser(e.ctx, o, signOn("ada-sub", "Ada@Example.com", escrow.RoleAdmin))
	if err != nil || u.Role != escrow.RoleAdmin || u.Email != "ada@example.com" {
		t.Fatalf("first sign-on: %+v %v", u, err)
	}
	// Later sign-ons find her by (issuer, sub), whatever the email claim says now.
	again, err := e.db.SSOUser(e.ctx, o, escrow.SSOSignOn{Issuer: testIssuer, Subject: "ada-sub", Email: "ada.lovelace@example.org"})
	if err != nil || again.ID != u.ID || again.Email != "ada@example.com" || again.Role != escrow.RoleAdmin {
		t.Fatalf("second sign-on: %+v %v", again, err)
	}
	// Another identity with her verified email is not her.
	_, err = e.db.SSOUser(e.ctx, o, signOn("mallory-sub", "ada@example.com", escrow.RoleAdmin))
	wantCode(t, err, escrow.CodeUnauthorized)
	// The same sub at another issuer is another identity too.
	other := signOn("ada-sub", "ada@example.com", escrow.RoleAdmin)
	other.Issuer = "https://other-idp.example.com"
	_, err = e.db.SSOUser(e.ctx, o, other)
	wantCode(t, err, escrow.CodeUnauthorized)

	created := e.events(escrow.AuditFilter{Action: escrow.ActionUserCreate})
	if len(created) != 1 || created[0].Actor.ID != u.ID || !strings.Contains(created[0].Detail, "ada-sub of "+testIssuer) {
		t.Fatalf("create events: %+v", created)
	}
	denied := e.events(escrow.AuditFilter{Action: escrow.ActionSignIn, Outcome: "denied"})
	if len(denied) != 2 || !strings.Contains(denied[0].Detail, "linked to another single sign-on identity") {
		t.Fatalf("refusals: %+v", denied)
	}
	if _, hash, _ := e.db.UserCredentials(e.ctx, "ada@example.com"); hash != "" {
		t.Fatal("a single sign-on user has a password")
	}

	for name, bad := range map[string]escrow.SSOSignOn{
		"no email claim":              {Issuer: testIssuer, Subject: "s1", Role: escrow.RoleUser, RoleClaimed: true},
		"email_verified missing":      {Issuer: testIssuer, Subject: "s2", Email: "eve@example.com", Role: escrow.RoleUser, RoleClaimed: true},
		"look-alike email":            signOn("s3", "\u017fam@example.com", escrow.RoleUser),
		"no at sign":                  signOn("s4", "no-at-sign", escrow.RoleUser),
		"no role and no default role": {Issuer: testIssuer, Subject: "s5", Email: "zed@example.com", EmailVerified: true},
	} {
		before := len(e.events(escrow.AuditFilter{Action: escrow.ActionSignIn, Outcome: "denied"}))
		_, err := e.db.SSOUser(e.ctx, o, bad)
		if escrow.ErrorCode(err) != escrow.CodeUnauthorized {
			t.Errorf("%s: %v, want a refusal", name, err)
		}
		if after := len(e.events(escrow.AuditFilter{Action: escrow.ActionSignIn, Outcome: "denied"})); after != before+1 {
			t.Errorf("%s: refusal not audited", name)
		}
	}
	if users, err := e.db.ListUsers(e.ctx); err != nil || len(users) != 1 {
		t.Fatalf("refused sign-ons made people: %+v, %v", users, err)
	}
	for _, bad := range []escrow.SSOSignOn{signOn("", "x@example.com", escrow.RoleUser), signOn("s\u202e", "x@example.com", escrow.RoleUser), signOn("s6", "x@example.com", "root")} {
		_, err := e.db.SSOUser(e.ctx, o, bad)
		wantCode(t, err, escrow.CodeInvalid)
	}
}

func TestSSOUserLinking(t *testing.T) {
	e := newEnv(t)
	o := escrow.Origin{Source: escrow.SourceAdminPortal, IP: "192.0.2.8"}
	e.user("admin@example.com", escrow.RoleAdmin)
	pre := e.user("Pre@Example.com", escrow.RoleHelpdesk) // no password: pre-provisioned
	pw, err := e.db.CreateUser(e.ctx, adminOrigin, escrow.NewUser{Email: "pw@example.com", Role: escrow.RoleUser, PasswordHash: "argon2id-hash"})
	if err != nil {
		t.Fatal(err)
	}

	// Unverified: no link, even to a pre-provisioned person.
	_, err = e.db.SSOUser(e.ctx, o, escrow.SSOSignOn{Issuer: testIssuer, Subject: "pre-sub", Email: "pre@example.com", Role: escrow.RoleUser, RoleClaimed: true})
	wantCode(t, err, escrow.CodeUnauthorized)
	// Verified: linked, and with no role claim the role stays.
	got, err := e.db.SSOUser(e.ctx, o, escrow.SSOSignOn{Issuer: testIssuer, Subject: "pre-sub", Email: "PRE@example.com", EmailVerified: true, Role: escrow.RoleUser})
	if err != nil || got.ID != pre.ID || got.Role != escrow.RoleHelpdesk {
		t.Fatalf("pre-provisioned link: %+v, %v", got, err)
	}
	if ev := e.wantOneEvent(escrow.ActionUserSSOLink, escrow.OutcomeSuccess); !strings.Contains(ev.Detail, "pre-sub of "+testIssuer) {
		t.Fatalf("link event: %+v", ev)
	}

	// A password account is never linked by itself...
	_, err = e.db.SSOUser(e.ctx, o, signOn("pw-sub", "pw@example.com", escrow.RoleUser))
	wantCode(t, err, escrow.CodeUnauthorized)
	if _, hash, _ := e.db.UserCredentials(e.ctx, "pw@example.com"); hash != "argon2id-hash" {
		t.Fatal("a refused link changed the password")
	}
	// ...only once an admin allowed it, and the link then removes the password.
	if _, err := e.db.AllowSSOLink(e.ctx, adminOrigin, "PW@example.com"); err != nil {
		t.Fatal(err)
	}
	e.wantOneEvent(escrow.ActionUserSSOLinkAllow, escrow.OutcomeSuccess)
	if _, hash, _ := e.db.UserCredentials(e.ctx, "pw@example.com"); hash != "argon2id-hash" {
		t.Fatal("allowing the link removed the password before any sign-on")
	}
	got, err = e.db.SSOUser(e.ctx, o, signOn("pw-sub", "pw@example.com", escrow.RoleUser))
	if err != nil || got.ID != pw.ID {
		t.Fatalf("allowed link: %+v, %v", got, err)
	}
	if _, hash, _ := e.db.UserCredentials(e.ctx, "pw@example.com"); hash != "" {
		t.Fatal("the link kept the local password")
	}
	// The permission is used up: another identity with that email is refused again.
	_, err = e.db.SSOUser(e.ctx, o, signOn("pw-sub-2", "pw@example.com", escrow.RoleUser))
	wantCode(t, err, escrow.CodeUnauthorized)
	_, err = e.db.AllowSSOLink(e.ctx, adminOrigin, "nobody@example.com")
	wantCode(t, err, escrow.CodeNotFound)
	_, err = e.db.AllowSSOLink(e.ctx, adminOrigin, "\u017fam@example.com")
	wantCode(t, err, escrow.CodeInvalid)
}

func TestSSOUserRoles(t *testing.T) {
	e := newEnv(t)
	o := escrow.Origin{Source: escrow.SourceAdminPortal, IP: "192.0.2.8"}
	first, err := e.db.SSOUser(e.ctx, o, signOn("a1", "a1@example.com", escrow.RoleAdmin))
	if err != nil {
		t.Fatal(err)
	}
	// The last enabled admin is not demoted by the claims: that part is refused and audited.
	got, err := e.db.SSOUser(e.ctx, o, signOn("a1", "a1@example.com", escrow.RoleUser))
	if err != nil || got.Role != escrow.RoleAdmin {
		t.Fatalf("last admin after a user claim: %+v, %v", got, err)
	}
	ev := e.wantOneEvent(escrow.ActionUserRole, escrow.OutcomeDenied)
	if ev.Actor.ID != first.ID || !strings.Contains(ev.Detail, "last enabled admin") {
		t.Fatalf("refused demotion event: %+v", ev)
	}
	// With a second admin, the claims demote.
	if _, err := e.db.SSOUser(e.ctx, o, signOn("a2", "a2@example.com", escrow.RoleAdmin)); err != nil {
		t.Fatal(err)
	}
	if got, err = e.db.SSOUser(e.ctx, o, signOn("a1", "a1@example.com", escrow.RoleUser)); err != nil || got.Role != escrow.RoleUser {
		t.Fatalf("demotion with another admin: %+v, %v", got, err)
	}
	// No role claim at all: the role stays, whatever the default role is.
	noClaim := escrow.SSOSignOn{Issuer: testIssuer, Subject: "a2", Role: escrow.RoleUser}
	if got, err = e.db.SSOUser(e.ctx, o, noClaim); err != nil || got.Role != escrow.RoleAdmin {
		t.Fatalf("sign-on without a role claim: %+v, %v", got, err)
	}
	if users, _ := e.db.ListUsers(e.ctx); users[1].Role != escrow.RoleAdmin {
		t.Fatalf("stored role after a sign-on without a role claim: %+v", users[1])
	}
}

func TestUsersAndRoles(t *testing.T) {
	e := newEnv(t)
	admin := e.user("admin@example.com", escrow.RoleAdmin)
	e.user("Zoe@example.com", escrow.RoleUser)
	e.user("bob@example.com", escrow.RoleUser)
	users, err := e.db.ListUsers(e.ctx)
	if err != nil || len(users) != 3 || users[0].Email != "admin@example.com" || users[1].Email != "bob@example.com" || users[2].Email != "zoe@example.com" {
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
	if _, err := e.db.RequestRotation(e.ctx, adminOrigin, a.DeviceID, "", asAdmin("first"), allowDevice); err != nil {
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

// TestSSOLinksAreCopied: a copy (migrate-store, backup, restore) keeps who is linked to which
// identity; without it, the copy would let another identity with the same verified email in.
func TestSSOLinksAreCopied(t *testing.T) {
	e := newEnv(t)
	o := escrow.Origin{Source: escrow.SourceAdminPortal, IP: "192.0.2.8"}
	linked, err := e.db.SSOUser(e.ctx, o, signOn("ada-sub", "ada@example.com", escrow.RoleAdmin))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.CreateUser(e.ctx, adminOrigin, escrow.NewUser{Email: "pw@example.com", Role: escrow.RoleUser, PasswordHash: "argon2id-hash"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.AllowSSOLink(e.ctx, adminOrigin, "pw@example.com"); err != nil {
		t.Fatal(err)
	}
	tgt := emptyTarget(t, e.master)
	if _, err := e.db.CopyTo(e.ctx, tgt.db); err != nil {
		t.Fatal(err)
	}
	if got, err := tgt.db.SSOUser(tgt.ctx, o, escrow.SSOSignOn{Issuer: testIssuer, Subject: "ada-sub"}); err != nil || got.ID != linked.ID {
		t.Fatalf("linked identity after the copy: %+v, %v", got, err)
	}
	_, err = tgt.db.SSOUser(tgt.ctx, o, signOn("mallory", "ada@example.com", escrow.RoleAdmin))
	wantCode(t, err, escrow.CodeUnauthorized)
	if _, err := tgt.db.SSOUser(tgt.ctx, o, signOn("pw-sub", "pw@example.com", escrow.RoleUser)); err != nil {
		t.Fatalf("allowed link after the copy: %v", err)
	}
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
