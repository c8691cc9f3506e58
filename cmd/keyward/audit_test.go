package main

import (
	"bytes"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/bitlockertest"
	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/seal"
	"github.com/keyward/keyward/internal/store"
)

// withHistory starts a server in a new data directory, gives it an admin, a device, escrows and
// a disclosure, stops it and returns the directory and a handle on its database as someone who
// can write the file (but has no master key) would open it.
func withHistory(t *testing.T) (dir string, raw *sql.DB) {
	t.Helper()
	dir = t.TempDir()
	r := start(t, dir, nil)
	admin, deviceID, deviceToken, _ := setUp(t, r.URL(), dir)
	for _, s := range bitlockertest.Samples(t)[:2] {
		mustCall(t, 201, "PUT", r.URL()+"/api/agent/keys/"+s.KeyID, deviceToken, escrowJSON(s.Password))
	}
	mustCall(t, 200, "GET", r.URL()+"/api/devices/security/bitlocker/keys/"+deviceID+"?reason=test", admin, "")
	r.stop()
	raw, err := sql.Open("sqlite", "file:"+filepath.Join(dir, store.DatabaseFile)+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return dir, raw
}

func mustExec(t *testing.T, raw *sql.DB, query string, args ...any) {
	t.Helper()
	if _, err := raw.Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// storedEvents reads the audit trail behind the store's back, oldest first.
func storedEvents(t *testing.T, raw *sql.DB) []escrow.AuditEvent {
	t.Helper()
	rows, err := raw.Query(`SELECT seq, time, actor_type, actor_id, actor_name, action, device_id, key_id, source, reason, outcome, ip, user_agent, detail, hash FROM audit_events ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []escrow.AuditEvent
	for rows.Next() {
		var e escrow.AuditEvent
		var tm int64
		var actorType, source, outcome string
		if err := rows.Scan(&e.Seq, &tm, &actorType, &e.Actor.ID, &e.Actor.Name, &e.Action, &e.DeviceID, &e.KeyID,
			&source, &e.Reason, &outcome, &e.IP, &e.UserAgent, &e.Detail, &e.Hash); err != nil {
			t.Fatal(err)
		}
		e.Time = time.UnixMicro(tm).UTC()
		e.Actor.Type, e.Source, e.Outcome = escrow.ActorType(actorType), escrow.Source(source), escrow.Outcome(outcome)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// rehashPlain gives events[from:] the plain SHA-256 chain's hashes, as anyone who can write the
// database can, and returns the last.
func rehashPlain(t *testing.T, raw *sql.DB, events []escrow.AuditEvent, from int) []byte {
	t.Helper()
	prev := audit.Genesis()
	if from > 0 {
		prev = events[from-1].Hash
	}
	for i := from; i < len(events); i++ {
		events[i].Hash = audit.Hash(prev, events[i])
		mustExec(t, raw, `UPDATE audit_events SET hash = $1 WHERE seq = $2`, events[i].Hash, events[i].Seq)
		prev = events[i].Hash
	}
	return prev
}

// TestAuditVerifyCatchesAForgerWithTheDatabase: each of these was reported intact while the
// chain was plain SHA-256.
func TestAuditVerifyCatchesAForgerWithTheDatabase(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(t *testing.T, raw *sql.DB, events []escrow.AuditEvent) (want string)
	}{
		{"last events deleted and the head moved back", func(t *testing.T, raw *sql.DB, ev []escrow.AuditEvent) string {
			keep := ev[len(ev)-3]
			mustExec(t, raw, `DELETE FROM audit_events WHERE seq > $1`, keep.Seq)
			mustExec(t, raw, `UPDATE audit_head SET seq = $1, hash = $2`, keep.Seq, keep.Hash)
			return fmt.Sprintf("the end was cut off after seq %d", keep.Seq)
		}},
		{"head's hash zeroed", func(t *testing.T, raw *sql.DB, ev []escrow.AuditEvent) string {
			mustExec(t, raw, `UPDATE audit_head SET hash = $1`, make([]byte, 32))
			return fmt.Sprintf("the end was cut off after seq %d", len(ev))
		}},
		{"key.read rewritten and re-hashed", func(t *testing.T, raw *sql.DB, ev []escrow.AuditEvent) string {
			i := len(ev) - 1
			for ev[i].Action != escrow.ActionKeyRead {
				i--
			}
			ev[i].Reason = "nothing to see"
			mustExec(t, raw, `UPDATE audit_events SET reason = $1 WHERE seq = $2`, ev[i].Reason, ev[i].Seq)
			mustExec(t, raw, `UPDATE audit_head SET hash = $1`, rehashPlain(t, raw, ev, i))
			return fmt.Sprintf("broken at seq %d", ev[i].Seq)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, raw := withHistory(t)
			events := storedEvents(t, raw)
			if code, out, stderr := cli(t, dir, "", "audit", "verify"); code != 0 || !strings.Contains(out, fmt.Sprintf("intact: %d events", len(events))) {
				t.Fatalf("audit verify before: %d %q %q", code, out, stderr)
			}
			want := tt.tamper(t, raw, events)
			if code, out, stderr := cli(t, dir, "", "audit", "verify"); code != 1 || !strings.Contains(stderr, want) {
				t.Fatalf("audit verify after tampering: exit %d, %q %q; want exit 1 saying %q", code, out, stderr, want)
			}
		})
	}
}

// TestAuditVerifyUpgradedDatabase builds a database as the versions before the keyed chain
// wrote it (plain SHA-256 hashes, an unauthenticated head, a check value without an audit key),
// then uses it with this version.
func TestAuditVerifyUpgradedDatabase(t *testing.T) {
	dir, raw := withHistory(t)
	events := storedEvents(t, raw)
	mustExec(t, raw, `UPDATE audit_head SET seq = $1, hash = $2, mac = NULL`, len(events), rehashPlain(t, raw, events, 0))
	sealer, err := seal.Load(filepath.Join(dir, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	check, err := sealer.NewCheck()
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, raw, `UPDATE seal_check SET ciphertext = $1, wrapped_key = $2`, check.Ciphertext, check.WrappedKey)

	if code, out, stderr := cli(t, dir, "", "audit", "verify"); code != 0 || !strings.Contains(out, fmt.Sprintf("intact: %d events", len(events))) {
		t.Fatalf("audit verify on the upgraded database: %d %q %q", code, out, stderr)
	}
	r := start(t, dir, nil)
	mustCall(t, 200, "GET", r.URL()+"/readyz", "", "")
	if code, _, stderr := cli(t, dir, "", "users", "add", "--email", "later@example.com", "--role", "auditor"); code != 0 {
		t.Fatalf("users add after the upgrade: %d %s", code, stderr)
	}
	r.stop()
	if code, out, stderr := cli(t, dir, "", "audit", "verify"); code != 0 || !strings.Contains(out, fmt.Sprintf("intact: %d events", len(events)+1)) {
		t.Fatalf("audit verify after new events: %d %q %q", code, out, stderr)
	}
	// The plain part is held to the hash recorded when the chain was keyed.
	events[0].Actor.Name = "someone else"
	mustExec(t, raw, `UPDATE audit_events SET actor_name = $1 WHERE seq = 1`, events[0].Actor.Name)
	rehashPlain(t, raw, events, 0)
	if code, _, stderr := cli(t, dir, "", "audit", "verify"); code != 1 || !strings.Contains(stderr, fmt.Sprintf("seq %d", len(events))) {
		t.Fatalf("audit verify after rewriting the plain part: %d %q", code, stderr)
	}
}

func TestMigrateStoreRecordsTheCopyInBoth(t *testing.T) {
	from, raw := withHistory(t)
	before := len(storedEvents(t, raw))
	to := filepath.Join(t.TempDir(), "copy")
	var out, errOut bytes.Buffer
	if code := Run(t.Context(), []string{"migrate-store", "--from", from, "--to", to}, nil, &out, &errOut, func(string) string { return "" }); code != 0 || !strings.Contains(out.String(), "verified") {
		t.Fatalf("migrate-store: %d %q %q", code, out.String(), errOut.String())
	}
	src := storedEvents(t, raw)
	if len(src) != before+1 || src[before].Action != escrow.ActionStoreMigrate || !strings.Contains(src[before].Detail, "to "+to) {
		t.Fatalf("source trail ends with %+v", src[len(src)-1])
	}
	dstRaw, err := sql.Open("sqlite", "file:"+filepath.Join(to, store.DatabaseFile))
	if err != nil {
		t.Fatal(err)
	}
	defer dstRaw.Close()
	dst := storedEvents(t, dstRaw)
	if len(dst) != before+2 || dst[before].Action != escrow.ActionStoreMigrate || dst[before+1].Action != escrow.ActionStoreMigrate ||
		!strings.Contains(dst[before+1].Detail, "from "+from) {
		t.Fatalf("destination trail: %d events, ending %+v", len(dst), dst[len(dst)-1])
	}
	for _, d := range []string{from, to} {
		if code, out, stderr := cli(t, d, "", "audit", "verify", "--master-key-file", filepath.Join(from, "master.key")); code != 0 {
			t.Fatalf("audit verify %s: %d %q %q", d, code, out, stderr)
		}
	}
}

// TestStoreNameKeepsSecretsOut: the stores a copy is recorded between are named without the
// user, password and parameters a PostgreSQL URL may carry.
func TestStoreNameKeepsSecretsOut(t *testing.T) {
	got := storeName("postgres://keyward:s3cret@db-vip:5432/keyward?sslmode=require&password=other")
	if got != "postgres://db-vip:5432/keyward" {
		t.Errorf("storeName = %q", got)
	}
	if got := storeName("relative/dir"); !filepath.IsAbs(got) || !strings.HasSuffix(got, "relative/dir") {
		t.Errorf("storeName of a directory = %q", got)
	}
}
