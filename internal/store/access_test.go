package store_test

import (
	"crypto/rand"
	"os"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// wantOneEvent checks that the audit trail holds exactly one event of the action, with the
// outcome, and that it names an actor.
func (e *env) wantOneEvent(action string, outcome escrow.Outcome) escrow.AuditEvent {
	e.t.Helper()
	ev := e.events(escrow.AuditFilter{Action: action})
	if len(ev) != 1 || ev[0].Outcome != outcome || ev[0].Actor.Type == "" || ev[0].Actor.Name == "" {
		e.t.Fatalf("%s events: %+v, want one %s with an actor", action, ev, outcome)
	}
	return ev[0]
}

func TestRevokeAPIToken(t *testing.T) {
	e := newEnv(t)
	e.user("ada@example.com", escrow.RoleHelpdesk)
	e.user("bob@example.com", escrow.RoleUser)
	tok, err := e.db.CreateAPIToken(e.ctx, adminOrigin, "ada@example.com", "laptop script")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.AuthenticateAPIToken(e.ctx, tok); err != nil {
		t.Fatalf("before revocation: %v", err)
	}
	bob := escrow.Origin{Actor: escrow.Actor{Type: escrow.ActorToken, ID: "bobtoken", Name: "bob@example.com"}, Source: escrow.SourceAPI}

	// Another person's token answers like an unknown one, and the attempt is on record.
	wantCode(t, e.db.RevokeAPIToken(e.ctx, bob, tok.ID, "bob@example.com"), escrow.CodeNotFound)
	wantCode(t, e.db.RevokeAPIToken(e.ctx, bob, "0123456789abcdef", "bob@example.com"), escrow.CodeNotFound)
	e.wantOneEvent(escrow.ActionTokenRevoke, escrow.OutcomeDenied)
	if _, err := e.db.AuthenticateAPIToken(e.ctx, tok); err != nil {
		t.Fatalf("after a refused revocation: %v", err)
	}

	if err := e.db.RevokeAPIToken(e.ctx, adminOrigin, tok.ID, "ADA@example.com"); err != nil {
		t.Fatalf("owner revokes: %v", err)
	}
	_, err = e.db.AuthenticateAPIToken(e.ctx, tok)
	wantCode(t, err, escrow.CodeUnauthorized)
	wantCode(t, e.db.RevokeAPIToken(e.ctx, adminOrigin, tok.ID, ""), escrow.CodeConflict)
	ev := e.events(escrow.AuditFilter{Action: escrow.ActionTokenRevoke, Outcome: string(escrow.OutcomeSuccess)})
	if len(ev) != 1 || ev[0].Actor != adminOrigin.Actor || ev[0].Detail != "API token "+tok.ID+" of ada@example.com" {
		t.Fatalf("revocation events %+v", ev)
	}

	list, err := e.db.ListAPITokens(e.ctx, "")
	if err != nil || len(list) != 1 {
		t.Fatalf("ListAPITokens = %+v, %v", list, err)
	}
	if got := list[0]; got.ID != tok.ID || got.UserEmail != "ada@example.com" || got.Name != "laptop script" ||
		!got.RevokedAt.Equal(e.clock.Now().Truncate(time.Microsecond)) || !got.LastUsedAt.Equal(e.clock.Now().Truncate(time.Microsecond)) {
		t.Fatalf("listed token %+v", got)
	}
	if list, err := e.db.ListAPITokens(e.ctx, "bob@example.com"); err != nil || len(list) != 0 {
		t.Fatalf("bob's tokens = %+v, %v", list, err)
	}
}

func TestDisableUser(t *testing.T) {
	e := newEnv(t)
	admin := e.user("admin@example.com", escrow.RoleAdmin)
	u, err := e.db.CreateUser(e.ctx, adminOrigin, escrow.NewUser{Email: "leaver@example.com", Role: escrow.RoleHelpdesk})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := e.db.CreateAPIToken(e.ctx, adminOrigin, u.Email, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.db.StartSession(e.ctx, userOrigin(u), u.ID, hashOf("leaver-session"), "password", time.Hour); err != nil {
		t.Fatal(err)
	}
	disable, enable := true, false

	got, err := e.db.UpdateUser(e.ctx, userOrigin(admin), u.ID, escrow.UserChange{Disabled: &disable})
	if err != nil || !got.Disabled() {
		t.Fatalf("disable = %+v, %v", got, err)
	}
	_, err = e.db.SessionPrincipal(e.ctx, hashOf("leaver-session"), time.Hour)
	wantCode(t, err, escrow.CodeUnauthorized)
	_, err = e.db.AuthenticateAPIToken(e.ctx, tok)
	wantCode(t, err, escrow.CodeUnauthorized)
	if c, _, err := e.db.UserCredentials(e.ctx, u.Email); err != nil || !c.Disabled() {
		t.Fatalf("credentials of a disabled user: %+v, %v", c, err)
	}
	_, err = e.db.SSOUser(e.ctx, adminOrigin, signOn("leaver-sub", u.Email, escrow.RoleAdmin))
	wantCode(t, err, escrow.CodeUnauthorized)
	_, err = e.db.CreateAPIToken(e.ctx, adminOrigin, u.Email, "")
	wantCode(t, err, escrow.CodeConflict)
	if users, err := e.db.ListUsers(e.ctx); err != nil || len(users) != 2 || !users[1].Disabled() || users[1].Role != escrow.RoleHelpdesk {
		t.Fatalf("ListUsers = %+v, %v", users, err)
	}
	ev := e.wantOneEvent(escrow.ActionUserDisable, escrow.OutcomeSuccess)
	if ev.Actor.ID != admin.ID || ev.Detail != "user leaver@example.com disabled; 1 portal sessions ended" {
		t.Fatalf("disable event %+v", ev)
	}

	// Disabling again changes nothing and records nothing.
	if _, err := e.db.UpdateUser(e.ctx, userOrigin(admin), u.ID, escrow.UserChange{Disabled: &disable}); err != nil {
		t.Fatal(err)
	}
	e.wantOneEvent(escrow.ActionUserDisable, escrow.OutcomeSuccess)

	if got, err = e.db.UpdateUser(e.ctx, userOrigin(admin), u.ID, escrow.UserChange{Disabled: &enable}); err != nil || got.Disabled() {
		t.Fatalf("enable = %+v, %v", got, err)
	}
	if p, err := e.db.AuthenticateAPIToken(e.ctx, tok); err != nil || p.Email != u.Email {
		t.Fatalf("token after enabling: %+v, %v", p, err)
	}
	if _, err := e.db.SSOUser(e.ctx, adminOrigin, signOn("leaver-sub", u.Email, escrow.RoleHelpdesk)); err != nil {
		t.Fatalf("single sign-on after enabling: %v", err)
	}
	e.wantOneEvent(escrow.ActionUserEnable, escrow.OutcomeSuccess)

	_, err = e.db.UpdateUser(e.ctx, userOrigin(admin), "no-such-user", escrow.UserChange{Disabled: &disable})
	wantCode(t, err, escrow.CodeNotFound)
	bad := escrow.Role("root")
	_, err = e.db.UpdateUser(e.ctx, userOrigin(admin), u.ID, escrow.UserChange{Role: &bad})
	wantCode(t, err, escrow.CodeInvalid)
}

func TestAdminsCannotLockThemselvesOut(t *testing.T) {
	e := newEnv(t)
	first := e.user("first@example.com", escrow.RoleAdmin)
	disable, user := true, escrow.RoleUser

	// The only admin: neither disabled nor demoted, by anyone.
	_, err := e.db.UpdateUser(e.ctx, adminOrigin, first.ID, escrow.UserChange{Disabled: &disable})
	wantCode(t, err, escrow.CodeConflict)
	_, err = e.db.UpdateUser(e.ctx, adminOrigin, first.ID, escrow.UserChange{Role: &user})
	wantCode(t, err, escrow.CodeConflict)

	// With a second admin, still not by themself, through the portal or a token.
	second := e.user("second@example.com", escrow.RoleAdmin)
	viaToken := escrow.Origin{Actor: escrow.Actor{Type: escrow.ActorToken, ID: "0123456789abcdef", Name: "FIRST@example.com"}, Source: escrow.SourceAPI}
	for _, o := range []escrow.Origin{userOrigin(first), viaToken} {
		_, err = e.db.UpdateUser(e.ctx, o, first.ID, escrow.UserChange{Disabled: &disable})
		wantCode(t, err, escrow.CodeConflict)
		_, err = e.db.UpdateUser(e.ctx, o, first.ID, escrow.UserChange{Role: &user})
		wantCode(t, err, escrow.CodeConflict)
	}

	// The other admin may disable them; then the one left is the last enabled admin.
	if _, err := e.db.UpdateUser(e.ctx, userOrigin(second), first.ID, escrow.UserChange{Disabled: &disable}); err != nil {
		t.Fatal(err)
	}
	_, err = e.db.UpdateUser(e.ctx, adminOrigin, second.ID, escrow.UserChange{Role: &user})
	wantCode(t, err, escrow.CodeConflict)
	if n := len(e.events(escrow.AuditFilter{Action: escrow.ActionUserRole})); n != 0 {
		t.Fatalf("%d role events for refused changes", n)
	}
	e.wantOneEvent(escrow.ActionUserDisable, escrow.OutcomeSuccess)
}

func TestRevokeEnrollmentToken(t *testing.T) {
	e := newEnv(t)
	tok, err := e.db.CreateEnrollmentToken(e.ctx, adminOrigin, 5, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.db.RevokeEnrollmentToken(e.ctx, adminOrigin, tok.ID); err != nil {
		t.Fatal(err)
	}
	ev := e.wantOneEvent(escrow.ActionEnrollTokenRevoke, escrow.OutcomeSuccess)
	if ev.Detail != "enrollment token "+tok.ID {
		t.Fatalf("revocation event %+v", ev)
	}
	wantCode(t, e.db.RevokeEnrollmentToken(e.ctx, adminOrigin, tok.ID), escrow.CodeConflict)
	wantCode(t, e.db.RevokeEnrollmentToken(e.ctx, adminOrigin, "0123456789abcdef"), escrow.CodeNotFound)

	_, err = e.db.Enroll(e.ctx, escrow.Origin{Source: escrow.SourceAgent}, tok.Token,
		escrow.Enrollment{Hostname: "LT-0001", SerialNumber: "SN", OSVersion: "10.0.26100"})
	wantCode(t, err, escrow.CodeUnauthorized)
	if devices, _, err := e.db.ListDevices(e.ctx, escrow.DeviceFilter{Scope: allScope}); err != nil || len(devices) != 0 {
		t.Fatalf("devices after a revoked enrollment: %+v, %v", devices, err)
	}
	enr := e.events(escrow.AuditFilter{Action: escrow.ActionDeviceEnroll})
	if len(enr) != 1 || enr[0].Outcome != escrow.OutcomeDenied || enr[0].Detail != "enrollment token "+tok.ID+" revoked" {
		t.Fatalf("enroll events %+v", enr)
	}

	list, err := e.db.ListEnrollmentTokens(e.ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("ListEnrollmentTokens = %+v, %v", list, err)
	}
	if got := list[0]; got.ID != tok.ID || got.UsesLeft == nil || *got.UsesLeft != 5 || got.RevokedAt.IsZero() ||
		!got.ExpiresAt.Equal(got.CreatedAt.Add(time.Hour)) || got.CreatedBy != adminOrigin.Actor.Name {
		t.Fatalf("listed token %+v", got)
	}
}

// TestMigrateFromPortalSchema opens a database that schema version 2 made, with a user and both
// kinds of tokens in it: after the migration nobody is disabled, nothing is revoked, and the
// tokens still work and can be revoked.
func TestMigrateFromPortalSchema(t *testing.T) {
	e := &env{t: t, ctx: t.Context(), dir: t.TempDir(), master: mustGenerate(t), clock: newClock()}
	dialect := "sqlite"
	if onPostgres() {
		e.url, dialect = pgSchema(t), "postgres"
	}
	raw := e.raw()
	for _, name := range []string{"0001_init.sql", "0002_portal.sql"} {
		body, err := os.ReadFile("migrations/" + dialect + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		e.exec(raw, string(body))
	}
	e.exec(raw, `CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)`)
	e.exec(raw, `INSERT INTO schema_migrations (version, applied_at) VALUES (1, 0), (2, 0)`)
	apiTok, err := escrow.NewToken(escrow.TokenAPI, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	enrollTok, err := escrow.NewToken(escrow.TokenEnrollment, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	e.exec(raw, `INSERT INTO users (id, email, email_key, role, created_at) VALUES ('u1', 'Old@example.com', 'old@example.com', 'admin', 1)`)
	e.exec(raw, `INSERT INTO api_tokens (id, user_id, name, secret_hash, created_at) VALUES ($1, 'u1', 'old', $2, 1)`, apiTok.ID, apiTok.SecretHash())
	e.exec(raw, `INSERT INTO enrollment_tokens (id, secret_hash, created_by, created_at) VALUES ($1, $2, 'old', 1)`, enrollTok.ID, enrollTok.SecretHash())

	e.db = e.open()
	users, err := e.db.ListUsers(e.ctx)
	if err != nil || len(users) != 1 || users[0].Disabled() {
		t.Fatalf("users after migration: %+v, %v", users, err)
	}
	if p, err := e.db.AuthenticateAPIToken(e.ctx, apiTok); err != nil || p.Email != "old@example.com" { // 0005 made it canonical
		t.Fatalf("old API token: %+v, %v", p, err)
	}
	list, err := e.db.ListEnrollmentTokens(e.ctx)
	if err != nil || len(list) != 1 || !list[0].RevokedAt.IsZero() || list[0].UsesLeft != nil {
		t.Fatalf("enrollment tokens after migration: %+v, %v", list, err)
	}
	if err := e.db.RevokeAPIToken(e.ctx, adminOrigin, apiTok.ID, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.AuthenticateAPIToken(e.ctx, apiTok); escrow.ErrorCode(err) != escrow.CodeUnauthorized {
		t.Fatalf("revoked old token: %v", err)
	}
}
