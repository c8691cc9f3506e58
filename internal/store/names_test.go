package store_test

import (
	"os"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/escrow"
)

// TestCanonicalNames holds people and owners to one form: lower-case ASCII, stored so, and
// anything else refused with an error naming the field.
func TestCanonicalNames(t *testing.T) {
	e := newEnv(t)
	sam := e.user("Sam@Example.COM", escrow.RoleUser)
	if sam.Email != "sam@example.com" {
		t.Fatalf("stored email %q, want the canonical form", sam.Email)
	}
	for _, bad := range []string{"\u017fam@example.com", "\u212aeith@example.com", "s\u0430m@example.com", "sam\u202e@example.com"} {
		_, err := e.db.CreateUser(e.ctx, adminOrigin, escrow.NewUser{Email: bad, Role: escrow.RoleUser})
		if escrow.ErrorCode(err) != escrow.CodeInvalid || !strings.HasPrefix(escrow.ErrorMessage(err), "email: ") {
			t.Errorf("CreateUser(%q) = %v, want invalid naming email", bad, err)
		}
		// A look-alike signs in as nobody.
		if _, _, err := e.db.UserCredentials(e.ctx, bad); escrow.ErrorCode(err) != escrow.CodeNotFound {
			t.Errorf("UserCredentials(%q) = %v", bad, err)
		}
	}
	if _, err := e.db.CreateUser(e.ctx, adminOrigin, escrow.NewUser{Email: "x@example.com", Role: escrow.RoleHelpdesk, ScopeTags: []string{"lab\u202e"}}); escrow.ErrorCode(err) != escrow.CodeInvalid {
		t.Errorf("a scope tag with U+202E: %v", err)
	}
	if _, err := e.db.CreateAPIToken(e.ctx, adminOrigin, "sam@example.com", "laptop\u202e"); escrow.ErrorCode(err) != escrow.CodeInvalid {
		t.Errorf("a token name with U+202E: %v", err)
	}

	tok, err := e.db.CreateEnrollmentToken(e.ctx, adminOrigin, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.db.Enroll(e.ctx, escrow.Origin{Source: escrow.SourceAgent}, tok.Token, escrow.Enrollment{Hostname: "LT-1", OwnerUPN: "\u017fam@example.com"})
	if escrow.ErrorCode(err) != escrow.CodeInvalid || !strings.HasPrefix(escrow.ErrorMessage(err), "ownerUpn: ") {
		t.Fatalf("enrollment with a look-alike owner: %v", err)
	}
	enrolled, err := e.db.Enroll(e.ctx, escrow.Origin{Source: escrow.SourceAgent}, tok.Token, escrow.Enrollment{Hostname: "LT-2", OwnerUPN: " SAM@example.com "})
	if err != nil {
		t.Fatal(err)
	}
	mine, _, err := e.db.ListDevices(e.ctx, escrow.DeviceFilter{Scope: escrow.Scope{OwnerUPN: "sam@example.com"}})
	if err != nil || len(mine) != 1 || mine[0].ID != enrolled.DeviceID || mine[0].OwnerUPN != "sam@example.com" {
		t.Fatalf("sam's devices: %+v, %v", mine, err)
	}
	for _, other := range []string{"\u017fam@example.com", "", " "} {
		if got, _, err := e.db.ListDevices(e.ctx, escrow.DeviceFilter{Scope: escrow.Scope{OwnerUPN: other}}); err != nil || len(got) != 0 {
			t.Errorf("devices of %q: %+v, %v", other, got, err)
		}
	}
	// A device without an owner belongs to nobody, even to a name without a canonical form.
	if _, err := e.db.Enroll(e.ctx, escrow.Origin{Source: escrow.SourceAgent}, tok.Token, escrow.Enrollment{Hostname: "LT-3"}); err != nil {
		t.Fatal(err)
	}
	if got, _, err := e.db.ListDevices(e.ctx, escrow.DeviceFilter{Scope: escrow.Scope{OwnerUPN: "\u212a"}}); err != nil || len(got) != 0 {
		t.Errorf("devices of a look-alike name: %+v, %v", got, err)
	}
}

// TestMigrateCanonicalNames opens a database that schema version 4 made, holding names in the
// old form (mixed case, and look-alikes whose Unicode lower case is plain ASCII): afterwards the
// ASCII names are canonical and the others are kept but match nobody.
func TestMigrateCanonicalNames(t *testing.T) {
	e := &env{t: t, ctx: t.Context(), dir: t.TempDir(), master: mustGenerate(t), clock: newClock()}
	dialect := "sqlite"
	if onPostgres() {
		e.url, dialect = pgSchema(t), "postgres"
	}
	raw := e.raw()
	for _, name := range []string{"0001_init.sql", "0002_portal.sql", "0003_access.sql", "0004_retire.sql"} {
		body, err := os.ReadFile("migrations/" + dialect + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		e.exec(raw, string(body))
	}
	e.exec(raw, `CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)`)
	e.exec(raw, `INSERT INTO schema_migrations (version, applied_at) VALUES (1, 0), (2, 0), (3, 0), (4, 0)`)
	// The check value the first start of that version wrote.
	check, err := mustSealer(t, e.master).NewCheck()
	if err != nil {
		t.Fatal(err)
	}
	e.exec(raw, `INSERT INTO seal_check (id, ciphertext, wrapped_key) VALUES (1, $1, $2)`, check.Ciphertext, check.WrappedKey)
	// What strings.ToLower made of them: U+212A (Kelvin sign) lower-cases to "k".
	e.exec(raw, `INSERT INTO users (id, email, email_key, role, created_at) VALUES
		('u1', 'Sam@Example.com', 'sam@example.com', 'user', 1),
		('u2', $1, 'keith@example.com', 'admin', 1),
		('u3', $2, $2, 'user', 1)`, "\u212aeith@example.com", "\u017fam@example.com")
	device := func(id, owner, key string) {
		e.exec(raw, `INSERT INTO devices (id, name, owner_upn, owner_key, token_id, token_hash, verification_key, verification_key_wrap, enrolled_at, last_seen_at)
			VALUES ($1, $1, $2, $3, $1, $4, $4, $4, 1, 1)`, id, owner, key, []byte{0})
	}
	device("d1", "Sam@Example.com", "sam@example.com")
	device("d2", "\u212aeith@example.com", "keith@example.com")
	device("d3", "\u017fam@example.com", "\u017fam@example.com")
	device("d4", "", "")
	e.db = e.open()

	users, err := e.db.ListUsers(e.ctx)
	if err != nil || len(users) != 3 {
		t.Fatalf("users after migration: %+v, %v", users, err)
	}
	byID := map[string]escrow.User{}
	for _, u := range users {
		byID[u.ID] = u
	}
	if byID["u1"].Email != "sam@example.com" || byID["u2"].Email != "\u212aeith@example.com" || byID["u3"].Email != "\u017fam@example.com" {
		t.Fatalf("emails after migration: %+v", users)
	}
	if u, _, err := e.db.UserCredentials(e.ctx, "Sam@example.com"); err != nil || u.ID != "u1" {
		t.Fatalf("sam after migration: %+v, %v", u, err)
	}
	// The look-alike admin no longer answers to keith's name, and keith can now be created.
	if _, _, err := e.db.UserCredentials(e.ctx, "keith@example.com"); escrow.ErrorCode(err) != escrow.CodeNotFound {
		t.Fatalf("keith@example.com after migration: %v", err)
	}
	if _, err := e.db.CreateUser(e.ctx, adminOrigin, escrow.NewUser{Email: "keith@example.com", Role: escrow.RoleUser}); err != nil {
		t.Fatalf("creating keith after migration: %v", err)
	}
	for owner, want := range map[string][]string{"sam@example.com": {"d1"}, "keith@example.com": nil} {
		got, _, err := e.db.ListDevices(e.ctx, escrow.DeviceFilter{Scope: escrow.Scope{OwnerUPN: owner}})
		var ids []string
		for _, d := range got {
			ids = append(ids, d.ID)
		}
		if err != nil || strings.Join(ids, ",") != strings.Join(want, ",") {
			t.Errorf("devices of %s after migration: %v, %v; want %v", owner, ids, err, want)
		}
	}
	all, _, err := e.db.ListDevices(e.ctx, escrow.DeviceFilter{Scope: escrow.Scope{All: true}})
	if err != nil || len(all) != 4 {
		t.Fatalf("devices after migration: %+v, %v", all, err)
	}
	for _, d := range all {
		if d.ID == "d2" && d.OwnerUPN != "\u212aeith@example.com" || d.ID == "d1" && d.OwnerUPN != "sam@example.com" {
			t.Errorf("device %s owner after migration: %q", d.ID, d.OwnerUPN)
		}
	}
}
