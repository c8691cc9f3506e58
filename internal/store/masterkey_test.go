package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/seal"
	"github.com/keyward/keyward/internal/store"
)

// masterFiles is a master key file before and after `keyward master-key rotate`.
type masterFiles struct {
	path             string
	oldID, newID     uint32
	rotated, newOnly []byte // keyset with both keys; keyset with the new key alone
}

// rotateMaster adds a new primary key to master, as `keyward master-key rotate` does.
func rotateMaster(t *testing.T, master []byte) masterFiles {
	t.Helper()
	m := masterFiles{path: filepath.Join(t.TempDir(), "master.key")}
	if err := os.WriteFile(m.path, master, 0o600); err != nil {
		t.Fatal(err)
	}
	m.oldID = mustSealer(t, master).PrimaryKeyID()
	var err error
	if m.newID, err = seal.AddKey(m.path); err != nil {
		t.Fatal(err)
	}
	if m.rotated, err = os.ReadFile(m.path); err != nil {
		t.Fatal(err)
	}
	if err := seal.RemoveKeys(m.path, []uint32{m.oldID}); err != nil {
		t.Fatal(err)
	}
	if m.newOnly, err = os.ReadFile(m.path); err != nil {
		t.Fatal(err)
	}
	return m
}

// with returns the env using its database through a store opened with master.
func (e *env) with(master []byte) *env {
	e.t.Helper()
	db, err := e.openWith(master)
	if err != nil {
		e.t.Fatalf("open store: %v", err)
	}
	e.t.Cleanup(func() { db.Close() })
	c := *e
	c.db = db
	return &c
}

// rewrap re-wraps and fails the test on error.
func (e *env) rewrap(batch int) store.RewrapResult {
	e.t.Helper()
	res, err := e.db.RewrapMasterKey(e.ctx, cliOrigin, batch)
	if err != nil {
		e.t.Fatalf("RewrapMasterKey: %v", err)
	}
	return res
}

func (e *env) use() store.MasterKeyUse {
	e.t.Helper()
	u, err := e.db.MasterKeyUse(e.ctx)
	if err != nil {
		e.t.Fatalf("MasterKeyUse: %v", err)
	}
	return u
}

// escrowMany enrolls devices and escrows n keys spread over them; it returns the device IDs
// and every escrowed password by key ID.
func (e *env) escrowMany(devices, n int) ([]string, map[string]string) {
	e.t.Helper()
	var ids []string
	want := map[string]string{}
	var ens []escrow.Enrolled
	for i := range devices {
		en := e.enroll(fmt.Sprintf("LT-%04d", i), "")
		ens = append(ens, en)
		ids = append(ids, en.DeviceID)
	}
	for i := range n {
		s := genSample(i)
		e.escrowPassword(ens[i%devices], osVolume, s)
		want[s.keyID] = s.password
	}
	return ids, want
}

// assertAllOpen discloses every device and checks every key against its escrowed password.
func (e *env) assertAllOpen(devices []string, want map[string]string) {
	e.t.Helper()
	got := 0
	for _, id := range devices {
		for _, k := range e.disclose(id).Keys {
			if want[k.KeyID] != k.Material {
				e.t.Errorf("key %s discloses other material than was escrowed", k.KeyID)
			}
			got++
		}
	}
	if got != len(want) {
		e.t.Errorf("%d keys disclosed, want %d", got, len(want))
	}
}

// rotatedEnv escrows keys on devices, then rotates the master key: it returns the store on
// the old key, the same database opened with the rotated keyset (as `keyward master-key`
// opens it), the key files, the device IDs and the escrowed passwords by key ID.
func rotatedEnv(t *testing.T, devices, keys int) (e, cli *env, m masterFiles, deviceIDs []string, want map[string]string) {
	t.Helper()
	e = newEnv(t)
	deviceIDs, want = e.escrowMany(devices, keys)
	m = rotateMaster(t, e.master)
	return e, e.with(m.rotated), m, deviceIDs, want
}

func TestRewrapMasterKeyIsIdempotent(t *testing.T) {
	t.Parallel()
	e, cli, m, devices, want := rotatedEnv(t, 2, 7)

	res := cli.rewrap(3)
	if res.PrimaryKeyID != m.newID || res.RecoveryKeys != (store.RewrapCounts{Rewrapped: 7}) ||
		res.DeviceKeys != (store.RewrapCounts{Rewrapped: 2}) || res.Check != (store.RewrapCounts{Rewrapped: 1}) {
		t.Fatalf("first run: %+v", res)
	}
	if u := cli.use(); len(u.ByKey) != 1 || u.ByKey[m.newID] != 10 || u.Unknown != 0 {
		t.Fatalf("after re-wrapping: %s", u)
	}
	again := cli.rewrap(3)
	if again.Total() != (store.RewrapCounts{Current: 10}) {
		t.Fatalf("second run changed something: %+v", again)
	}
	// The new key alone opens everything, the check value included (Open verifies it).
	e.with(m.newOnly).assertAllOpen(devices, want)
	if _, err := e.openWith(e.master); !errors.Is(err, seal.ErrWrongMasterKey) {
		t.Fatalf("open with the old key alone after re-wrapping: err = %v, want ErrWrongMasterKey", err)
	}

	events := e.events(escrow.AuditFilter{Action: escrow.ActionMasterKeyRotate})
	if len(events) != 2 || events[0].Actor != cliOrigin.Actor || events[0].Source != escrow.SourceCLI ||
		!strings.Contains(events[0].Detail, "re-wrapped 7 recovery keys, 2 device keys and 1 check value") ||
		!strings.Contains(events[1].Detail, "10 already wrapped by it") {
		t.Fatalf("masterkey.rotate events: %+v", events)
	}
	if _, err := cli.db.VerifyAudit(e.ctx); err != nil {
		t.Fatalf("VerifyAudit: %v", err)
	}
}

func TestRewrapMasterKeyResumes(t *testing.T) {
	t.Parallel()
	e, cli, m, devices, want := rotatedEnv(t, 1, 6)

	// Interrupted (the operator pressed Ctrl-C) before writing its second batch.
	ctx, cancel := context.WithCancel(e.ctx)
	batches := 0
	store.SetRewrapHook(cli.db, func() {
		if batches++; batches == 2 {
			cancel()
		}
	})
	if _, err := cli.db.RewrapMasterKey(ctx, cliOrigin, 2); err == nil {
		t.Fatal("an interrupted re-wrap reported success")
	}
	store.SetRewrapHook(cli.db, nil)
	if u := cli.use(); u.ByKey[m.newID] != 2 || u.ByKey[m.oldID] != 6 {
		t.Fatalf("after the interruption: %s; want 2 values under the new key", u)
	}
	// Half-way, both kinds of row open with the rotated keyset.
	cli.assertAllOpen(devices, want)

	res := cli.rewrap(2)
	if res.RecoveryKeys != (store.RewrapCounts{Rewrapped: 4, Current: 2}) || res.DeviceKeys.Rewrapped != 1 || res.Check.Rewrapped != 1 {
		t.Fatalf("resumed run: %+v", res)
	}
	e.with(m.newOnly).assertAllOpen(devices, want)
}

// TestRewrapNeverOverwritesConcurrentEscrow: a server still on the old key file replaces a
// key's material between the re-wrap's read and its write. The re-wrap must leave that row
// alone, retiring the old key must be refused until it is re-wrapped too, and the new
// material must survive.
func TestRewrapNeverOverwritesConcurrentEscrow(t *testing.T) {
	t.Parallel()
	e, cli, m, devices, want := rotatedEnv(t, 1, 4)
	raw := e.raw()

	first := genSample(0)
	replacement := genSample(100).password
	store.SetRewrapHook(cli.db, func() {
		store.SetRewrapHook(cli.db, nil)
		sealed, err := mustSealer(t, e.master).Seal([]byte(replacement), seal.AAD("key", devices[0], first.keyID))
		if err != nil {
			t.Fatal(err)
		}
		e.exec(raw, `UPDATE recovery_keys SET ciphertext = $1, wrapped_key = $2 WHERE key_id = $3`, sealed.Ciphertext, sealed.WrappedKey, first.keyID)
	})
	res := cli.rewrap(10)
	if res.RecoveryKeys != (store.RewrapCounts{Rewrapped: 3, Changed: 1}) {
		t.Fatalf("re-wrap with a concurrent write: %+v", res)
	}
	want[first.keyID] = replacement
	cli.assertAllOpen(devices, want)

	removed := false
	err := cli.db.RetireMasterKeys(e.ctx, cliOrigin, []uint32{m.oldID}, func() error { removed = true; return nil })
	wantCode(t, err, escrow.CodeConflict)
	if msg := escrow.ErrorMessage(err); removed || !strings.Contains(msg, fmt.Sprintf("1 values are still wrapped by master key ID %d", m.oldID)) {
		t.Fatalf("retire while a row uses the old key: removed %v, %q", removed, msg)
	}

	if res := cli.rewrap(10); res.RecoveryKeys != (store.RewrapCounts{Rewrapped: 1, Current: 3}) {
		t.Fatalf("second run: %+v", res)
	}
	if err := cli.db.RetireMasterKeys(e.ctx, cliOrigin, []uint32{m.oldID}, func() error { removed = true; return nil }); err != nil || !removed {
		t.Fatalf("retire after re-wrapping everything: removed %v, %v", removed, err)
	}
	e.with(m.newOnly).assertAllOpen(devices, want)
	if n := e.countEvents(escrow.AuditFilter{Action: escrow.ActionMasterKeyRetire}); n != 1 {
		t.Fatalf("%d masterkey.retire events, want 1", n)
	}
}

func TestRetireMasterKeysFailureChangesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.escrowMany(1, 1)
	before := e.countEvents(escrow.AuditFilter{})
	err := e.db.RetireMasterKeys(e.ctx, cliOrigin, []uint32{12345}, func() error { return errors.New("disk full") })
	if err == nil || !strings.Contains(escrow.ErrorMessage(err), "disk full") {
		t.Fatalf("retire whose file change fails: %v", err)
	}
	if after := e.countEvents(escrow.AuditFilter{}); after != before {
		t.Fatalf("a failed retire recorded %d events", after-before)
	}
}

func TestRewrapMasterKeyRefusesBadBatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	_, err := e.db.RewrapMasterKey(e.ctx, cliOrigin, 0)
	wantCode(t, err, escrow.CodeInvalid)
}

// BenchmarkRewrapMasterKey measures re-wrapping throughput: each iteration adds a key to the
// master key file and re-wraps every sealed value under it, in batches of 500.
func BenchmarkRewrapMasterKey(b *testing.B) {
	const keys = 1000
	ctx := b.Context()
	path := filepath.Join(b.TempDir(), "master.key")
	master, err := seal.Generate()
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, master, 0o600); err != nil {
		b.Fatal(err)
	}
	sealer, err := seal.Load(path)
	if err != nil {
		b.Fatal(err)
	}
	url := ""
	if onPostgres() {
		url = pgSchema(b)
	}
	db, err := store.Open(ctx, url, b.TempDir(), store.Options{Sealer: sealer})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	tok, err := db.CreateEnrollmentToken(ctx, adminOrigin, 1, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	en, err := db.Enroll(ctx, escrow.Origin{Source: escrow.SourceAgent}, tok.Token, escrow.Enrollment{Hostname: "LT-BENCH"})
	if err != nil {
		b.Fatal(err)
	}
	for i := range keys {
		if _, err := db.Escrow(ctx, deviceOrigin(en), en.DeviceID, passwordRequest(osVolume, genSample(i))); err != nil {
			b.Fatal(err)
		}
	}
	var spent time.Duration
	rows := 0
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		if _, err := seal.AddKey(path); err != nil {
			b.Fatal(err)
		}
		if err := sealer.Reload(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		res, err := db.RewrapMasterKey(ctx, cliOrigin, 500)
		spent += time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		if c := res.Total(); c.Rewrapped != keys+2 {
			b.Fatalf("re-wrapped %+v, want %d values", c, keys+2)
		}
		rows += res.Total().Rewrapped
	}
	b.ReportMetric(float64(rows)/spent.Seconds(), "rows/s")
}

// A running server re-reads its master key file, but only takes keys that open this
// installation's data: another installation's key file copied over it is refused, and values go
// on being sealed under keys the database opens. A real rotation is taken.
func TestReloadRefusesAnotherInstallationsKeyFile(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(t.TempDir(), "master.key")
	if err := os.WriteFile(path, e.master, 0o600); err != nil {
		t.Fatal(err)
	}
	sealer, err := seal.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	e.db.Close()
	db, err := store.Open(e.ctx, e.url, e.dir, store.Options{Sealer: sealer, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	primary := sealer.PrimaryKeyID()

	other, err := seal.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, other, 0o600); err != nil {
		t.Fatal(err)
	}
	err = sealer.Reload()
	if err == nil || !strings.Contains(err.Error(), "another installation's key file") {
		t.Fatalf("Reload of another installation's key file: %v, want a refusal saying so", err)
	}
	if sealer.PrimaryKeyID() != primary {
		t.Fatal("the refused key file replaced the keys in use")
	}

	if err := os.WriteFile(path, e.master, 0o600); err != nil {
		t.Fatal(err)
	}
	newID, err := seal.AddKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := sealer.Reload(); err != nil {
		t.Fatalf("Reload after a rotation: %v", err)
	}
	if sealer.PrimaryKeyID() != newID {
		t.Fatalf("primary %d after a rotation, want %d", sealer.PrimaryKeyID(), newID)
	}
}
