package store_test

import (
	"bytes"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/store"
)

// backedUp is an installation with a device, three escrowed keys and a disclosure, and a backup
// of it.
func backedUp(t *testing.T) (*env, string, store.BackupSummary) {
	t.Helper()
	e := newEnv(t)
	en := e.enroll("LT-0042", "alice@example.com")
	for _, s := range []sample{xts128, cbc128, togo} {
		e.escrowPassword(en, osVolume, s)
	}
	if _, err := e.db.Disclose(e.ctx, adminOrigin, en.DeviceID, asAdmin("forgotten PIN"), allowAll); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "keyward.backup")
	sum, err := e.db.Backup(e.ctx, out, mustSealer(t, e.master), cliOrigin)
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	return e, out, sum
}

// emptyTarget is a fresh installation to restore into: a new data directory, or a new schema.
func emptyTarget(t *testing.T, master []byte) *env {
	t.Helper()
	tgt := &env{t: t, ctx: t.Context(), dir: t.TempDir(), master: master, clock: newClock()}
	if onPostgres() {
		tgt.url = pgSchema(t)
	}
	db, err := store.Open(tgt.ctx, tgt.url, tgt.dir, store.Options{Sealer: mustSealer(t, master)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	tgt.db = db
	return tgt
}

func TestBackupIsVerifiedSealedAndAudited(t *testing.T) {
	e, out, sum := backedUp(t)
	if sum.Devices != 1 || sum.Keys != 3 || sum.Users != 0 || sum.AuditEvents == 0 || sum.AuditEvents != sum.LastSeq {
		t.Errorf("summary %+v", sum)
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v, want mode 0600", fi, err)
	}
	if left, _ := os.ReadDir(filepath.Dir(out)); len(left) != 1 {
		t.Errorf("files beside the backup: %v, want the backup alone", left)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []sample{xts128, cbc128, togo} {
		for _, form := range []string{s.password, strings.ReplaceAll(s.password, "-", ""), s.password[:20]} {
			if bytes.Contains(b, []byte(form)) {
				t.Errorf("the backup holds the recovery password of %s in plain text", s.keyID)
			}
		}
	}
	// Taking the backup is in the live log, after what the backup holds, and the chain holds.
	events := e.events(escrow.AuditFilter{Action: escrow.ActionStoreBackup})
	if len(events) != 1 || events[0].Seq != sum.LastSeq+1 || !strings.Contains(events[0].Detail, out) || events[0].Source != escrow.SourceCLI {
		t.Errorf("store.backup events %+v, want one at seq %d naming %s", events, sum.LastSeq+1, out)
	}
	if _, err := e.db.VerifyAudit(e.ctx); err != nil {
		t.Errorf("live audit chain after a backup: %v", err)
	}

	_, err = e.db.Backup(e.ctx, out, mustSealer(t, e.master), cliOrigin)
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("backup over an existing file: %v", err)
	}
	if again, _ := os.ReadFile(out); !bytes.Equal(again, b) {
		t.Error("a refused backup changed the existing file")
	}
	if n := e.countEvents(escrow.AuditFilter{Action: escrow.ActionStoreBackup}); n != 1 {
		t.Errorf("%d store.backup events after a refused backup, want 1", n)
	}
}

func TestRestoreGivesBackTheKeys(t *testing.T) {
	e, out, sum := backedUp(t)
	tgt := emptyTarget(t, e.master)
	b, err := store.OpenBackup(tgt.ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.RestoreTo(tgt.ctx, tgt.db, cliOrigin); err == nil {
		t.Fatal("restored a backup that was never verified")
	}
	if _, err := b.Verify(tgt.ctx, mustSealer(t, e.master)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.RestoreTo(tgt.ctx, tgt.db, cliOrigin); err != nil {
		t.Fatalf("RestoreTo: %v", err)
	}
	tgt.db.Close()
	tgt.db = tgt.open() // with the master key: the restored check value must open
	n, err := tgt.db.VerifyAudit(tgt.ctx)
	if err != nil || n != sum.AuditEvents+1 {
		t.Fatalf("restored chain: %d events, %v; want %d", n, err, sum.AuditEvents+1)
	}
	last := tgt.events(escrow.AuditFilter{Action: escrow.ActionStoreRestore})
	if len(last) != 1 || last[0].Seq != sum.LastSeq+1 {
		t.Errorf("store.restore events %+v", last)
	}
	// The stored statuses and their counters come along: the census counts what the source does.
	srcCensus, err := e.db.Census(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	tgtCensus, err := tgt.db.Census(tgt.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(srcCensus) != fmt.Sprint(tgtCensus) || tgtCensus.Keys[escrow.KeyActive] == 0 {
		t.Errorf("census after restore %+v, the source %+v", tgtCensus, srcCensus)
	}
	devs := tgt.events(escrow.AuditFilter{Action: escrow.ActionDeviceEnroll})
	if st, _, err := store.StoredStatus(tgt.ctx, tgt.db, devs[0].DeviceID); err != nil || st != tgt.status(devs[0].DeviceID) {
		t.Errorf("stored status after restore %q, %v; the rules give %q", st, err, tgt.status(devs[0].DeviceID))
	}
	d, err := tgt.db.Disclose(tgt.ctx, adminOrigin, devs[0].DeviceID, asAdmin("after restore"), allowAll)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, k := range d.Keys {
		got[k.KeyID] = k.Material
	}
	for _, s := range []sample{xts128, cbc128, togo} {
		if got[s.keyID] != s.password {
			t.Errorf("key %s after restore: not the escrowed password", s.keyID)
		}
	}

	// The source is anything but empty: restoring into it is refused and changes nothing.
	before := e.countEvents(escrow.AuditFilter{})
	_, err = b.RestoreTo(e.ctx, e.db, cliOrigin)
	if err == nil || !strings.Contains(err.Error(), "already holds") {
		t.Errorf("restore into a non-empty store: %v", err)
	}
	if after := e.countEvents(escrow.AuditFilter{}); after != before {
		t.Errorf("a refused restore changed the audit log: %d events, then %d", before, after)
	}
}

// TestDamagedBackupRefused damages copies of a backup in the ways a disk, a transfer or a
// person can, and expects each refused before anything is restored, with the reason.
func TestDamagedBackupRefused(t *testing.T) {
	e, out, _ := backedUp(t)
	orig, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	column := func(query string) []byte {
		raw, err := sql.Open("sqlite", "file:"+out+"?mode=ro")
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		var v []byte
		if err := raw.QueryRow(query).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	flipIn := func(value []byte) func(b []byte) []byte {
		return func(b []byte) []byte {
			i := bytes.Index(b, value)
			if i < 0 {
				t.Fatal("value not found in the file")
			}
			b[i+len(value)/2] ^= 0x01
			return b
		}
	}
	cases := []struct {
		name   string
		damage func(b []byte) []byte
		edit   string // SQL run on the copy instead
		master []byte
		want   string
	}{
		{name: "header", damage: func(b []byte) []byte { b[3] ^= 0xff; return b }, want: "damaged or not a Keyward backup"},
		{name: "truncated", damage: func(b []byte) []byte { return b[:len(b)/2] }, want: "damaged"},
		{name: "end cut off", damage: func(b []byte) []byte { return b[:len(b)-1000] }, want: "is damaged: it is"},
		{name: "audit event", damage: flipIn(column(`SELECT hash FROM audit_events WHERE seq = 2`)), want: "audit chain does not verify"},
		{name: "key material", damage: flipIn(column(`SELECT ciphertext FROM recovery_keys LIMIT 1`)), want: "does not open: the backup is damaged"},
		{name: "newer schema", edit: `INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 0)`, want: "newer Keyward"},
		{name: "not Keyward", damage: func([]byte) []byte { return nil }, edit: `CREATE TABLE notes (x TEXT)`, want: "not a Keyward backup"},
		{name: "events cut off the end", edit: `DELETE FROM audit_events WHERE seq = (SELECT MAX(seq) FROM audit_events)`, want: "the end of the chain was cut off"},
		{name: "wrong master key", master: mustGenerate(t), want: "another master key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "copy.backup")
			b := bytes.Clone(orig)
			if c.damage != nil {
				b = c.damage(b)
			}
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if c.edit != "" {
				raw, err := sql.Open("sqlite", "file:"+path)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := raw.Exec(c.edit); err != nil {
					t.Fatal(err)
				}
				raw.Close()
			}
			master := e.master
			if c.master != nil {
				master = c.master
			}
			before, _ := os.ReadFile(path)
			bf, err := store.OpenBackup(t.Context(), path)
			if err == nil {
				_, err = bf.Verify(t.Context(), mustSealer(t, master))
				bf.Close()
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error saying %q", err, c.want)
			}
			t.Log(err)
			if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
				t.Error("checking the backup changed the file")
			}
		})
	}
	if _, err := store.OpenBackup(t.Context(), filepath.Join(t.TempDir(), "none")); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing backup file: %v", err)
	}
}
