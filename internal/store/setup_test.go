package store_test

import (
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/store"
)

// TestSetupLink: a setup link creates the first admin once, within its hour, and only while no
// enabled admin exists; only its hash is stored; making it and using it are audited.
func TestSetupLink(t *testing.T) {
	e := newEnv(t)
	o := escrow.Origin{Source: escrow.SourceAdminPortal, IP: "192.0.2.4"}
	if need, err := e.db.NeedsSetup(e.ctx); err != nil || !need {
		t.Fatalf("NeedsSetup on a new store = %v, %v", need, err)
	}
	first, err := e.db.CreateSetupLink(e.ctx, cliOrigin, time.Hour)
	if err != nil || len(first) != 43 {
		t.Fatalf("CreateSetupLink = %q, %v", first, err)
	}
	second, err := e.db.CreateSetupLink(e.ctx, cliOrigin, time.Hour)
	if err != nil || second == first {
		t.Fatalf("a second link = %q, %v", second, err)
	}
	var stored int
	if err := e.raw().QueryRowContext(e.ctx, `SELECT COUNT(*) FROM setup_tokens WHERE token_hash = $1`, store.SetupTokenHash(first)).Scan(&stored); err != nil || stored != 1 {
		t.Fatalf("the link's hash is stored %d times (%v)", stored, err)
	}
	for _, bad := range [][]byte{nil, store.SetupTokenHash("guess"), []byte(first)} {
		wantCode(t, e.db.CheckSetupLink(e.ctx, bad), escrow.CodeNotFound)
		_, err := e.db.CompleteSetup(e.ctx, o, bad, escrow.NewUser{Email: "mallory@example.com", PasswordHash: "h"})
		wantCode(t, err, escrow.CodeNotFound)
	}
	_, err = e.db.CompleteSetup(e.ctx, o, store.SetupTokenHash(first), escrow.NewUser{Email: "\u017fam@example.com", PasswordHash: "h"})
	wantCode(t, err, escrow.CodeInvalid)
	if err := e.db.CheckSetupLink(e.ctx, store.SetupTokenHash(first)); err != nil {
		t.Fatalf("the link after a refused form: %v", err)
	}
	u, err := e.db.CompleteSetup(e.ctx, o, store.SetupTokenHash(first), escrow.NewUser{Email: "Ada@example.com", Role: escrow.RoleUser, PasswordHash: "h"})
	if err != nil || u.Role != escrow.RoleAdmin || u.Email != "ada@example.com" {
		t.Fatalf("CompleteSetup = %+v, %v", u, err)
	}
	// Single use, and every other link dies with it.
	for _, tok := range []string{first, second} {
		wantCode(t, e.db.CheckSetupLink(e.ctx, store.SetupTokenHash(tok)), escrow.CodeNotFound)
	}
	_, err = e.db.CreateSetupLink(e.ctx, cliOrigin, time.Hour)
	wantCode(t, err, escrow.CodeConflict)
	if need, err := e.db.NeedsSetup(e.ctx); err != nil || need {
		t.Fatalf("NeedsSetup with an admin = %v, %v", need, err)
	}
	links := e.events(escrow.AuditFilter{Action: escrow.ActionSetupLink})
	admins := e.events(escrow.AuditFilter{Action: escrow.ActionSetupAdmin})
	if len(links) != 2 || len(admins) != 1 || admins[0].IP != o.IP || len(e.events(escrow.AuditFilter{Action: escrow.ActionUserCreate})) != 1 {
		t.Fatalf("events: %d setup.link, %+v setup.admin", len(links), admins)
	}
}

func TestSetupLinkExpires(t *testing.T) {
	e := newEnv(t)
	tok, err := e.db.CreateSetupLink(e.ctx, cliOrigin, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Hour)
	wantCode(t, e.db.CheckSetupLink(e.ctx, store.SetupTokenHash(tok)), escrow.CodeNotFound)
	_, err = e.db.CompleteSetup(e.ctx, cliOrigin, store.SetupTokenHash(tok), escrow.NewUser{Email: "ada@example.com"})
	wantCode(t, err, escrow.CodeNotFound)
	if users, err := e.db.ListUsers(e.ctx); err != nil || len(users) != 0 {
		t.Fatalf("users after an expired link: %+v %v", users, err)
	}
}

// TestSetupLinkEndsWithAnyAdmin: an admin made another way (keyward users add) ends setup.
func TestSetupLinkEndsWithAnyAdmin(t *testing.T) {
	e := newEnv(t)
	tok, err := e.db.CreateSetupLink(e.ctx, cliOrigin, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.CreateUser(e.ctx, cliOrigin, escrow.NewUser{Email: "root@example.com", Role: escrow.RoleAdmin}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, e.db.CheckSetupLink(e.ctx, store.SetupTokenHash(tok)), escrow.CodeNotFound)
	_, err = e.db.CompleteSetup(e.ctx, cliOrigin, store.SetupTokenHash(tok), escrow.NewUser{Email: "ada@example.com", PasswordHash: "h"})
	wantCode(t, err, escrow.CodeNotFound)
}
