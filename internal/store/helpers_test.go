package store_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/bitlockertest"
	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/seal"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/testkit"
)

func newClock() *testkit.Clock {
	return testkit.NewClock(time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC))
}

// sample is one recovery-password protector: its key ID and canonical password.
type sample struct {
	keyID    string
	password string
}

// Real protectors of the BitLocker images in ../shared/testdata/bitlocker (made on Windows).
var (
	xts128 = sample{"64311DEA-4587-4029-924A-BA299647998E", "235818-357951-253979-013365-241120-245575-342914-591910"}
	cbc128 = sample{"3FD763F9-74C7-4E90-8FA2-1F6A2E2B4E0C", "042647-302313-590458-071500-554323-116567-412181-516978"}
	togo   = sample{"7B15C1AF-DEFA-4A3F-A89F-45B93812337E", "607552-529496-550902-707531-545787-248358-370216-060401"}
)

// genSample returns a distinct, well-formed protector for bulk tests: each block is a multiple
// of 11 below 720896, so the password is canonical like one Windows would make.
func genSample(i int) sample {
	blocks := make([]string, 8)
	for j := range blocks {
		blocks[j] = fmt.Sprintf("%06d", ((i*8+j)*7919+12345)%65536*11)
	}
	return sample{
		keyID:    fmt.Sprintf("A%07X-0000-4000-8000-%012X", i, i),
		password: strings.Join(blocks, "-"),
	}
}

var readmeRow = regexp.MustCompile(`^\| (bitlk-[^ |]+) \| (\d{6}(?:-\d{6}){7}) \| ([0-9a-f-]{36}) \|`)

// readmeSamples returns every distinct protector listed in the samples' README.
func readmeSamples(t *testing.T) []sample {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(bitlockertest.Dir(t), "README.md"))
	if err != nil {
		t.Fatalf("BitLocker samples: %v", err)
	}
	var out []sample
	seen := map[string]bool{}
	for line := range strings.SplitSeq(string(b), "\n") {
		m := readmeRow.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		s := sample{keyID: strings.ToUpper(m[3]), password: m[2]}
		if !seen[s.keyID] {
			seen[s.keyID] = true
			out = append(out, s)
		}
	}
	if len(out) < 20 {
		t.Fatalf("found %d recovery passwords in the samples' README, want at least 20", len(out))
	}
	return out
}

const (
	osVolume   = `\\?\Volume{0b7f2a56-1c3d-4e5f-8a9b-0c1d2e3f4a5b}\`
	dataVolume = `\\?\Volume{5d1e7c44-9a2b-4c3d-8e4f-6a7b8c9d0e1f}\`
	usbVolume  = `\\?\Volume{e3a9d1f0-7b6c-4d5e-9f8a-1b2c3d4e5f60}\`
)

var (
	adminOrigin = escrow.Origin{
		Actor:     escrow.Actor{Type: escrow.ActorUser, ID: "user-admin", Name: "admin@example.com"},
		Source:    escrow.SourceAPI,
		IP:        "192.0.2.10",
		UserAgent: "store-test",
	}
	helpdeskOrigin = escrow.Origin{
		Actor:  escrow.Actor{Type: escrow.ActorUser, ID: "user-helpdesk", Name: "helpdesk@example.com"},
		Source: escrow.SourceAdminPortal,
	}
	adminPrincipal = escrow.Principal{Actor: adminOrigin.Actor, Role: escrow.RoleAdmin}
	allScope       = escrow.Scope{All: true}
)

func deviceOrigin(en escrow.Enrolled) escrow.Origin {
	return escrow.Origin{Actor: escrow.Actor{Type: escrow.ActorDevice, ID: en.DeviceID, Name: "device"}, Source: escrow.SourceAgent}
}

func allowAll(escrow.Device, escrow.Settings) bool { return true }

// asAdmin is a view or rotation by an admin for reason, with no ticket.
func asAdmin(reason string) escrow.Access {
	return escrow.Access{Reason: reason, Role: escrow.RoleAdmin}
}

func allowDevice(escrow.Device) bool { return true }

// env is a store on a real database: a SQLite file in a temporary directory, or, when
// KEYWARD_TEST_STORE=postgres, a fresh schema in the PostgreSQL database at
// KEYWARD_TEST_POSTGRES_URL. The same tests run on both: they are the storage conformance suite.
type env struct {
	t      testing.TB
	ctx    context.Context
	dir    string
	url    string // PostgreSQL only: the URL of this test's schema
	master []byte
	clock  *testkit.Clock
	db     *store.DB
}

// onPostgres reports whether this run of the suite is against PostgreSQL.
func onPostgres() bool { return os.Getenv("KEYWARD_TEST_STORE") == "postgres" }

// sqliteOnly skips a check of SQLite's files; PostgreSQL keeps its files to itself.
func sqliteOnly(t *testing.T) {
	t.Helper()
	if onPostgres() {
		t.Skip("looks at SQLite's files")
	}
}

func mustGenerate(t testing.TB) []byte {
	t.Helper()
	master, err := seal.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return master
}

func mustSealer(t testing.TB, master []byte) *seal.Sealer {
	t.Helper()
	s, err := seal.New(master)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{t: t, ctx: t.Context(), dir: t.TempDir(), master: mustGenerate(t), clock: newClock()}
	if onPostgres() {
		e.url = pgSchema(t)
	}
	e.db = e.open()
	return e
}

// pgSchema creates a schema of its own for the test in the PostgreSQL database and returns a
// URL whose connections use it; the schema is dropped when the test ends.
func pgSchema(t testing.TB) string {
	t.Helper()
	base := os.Getenv("KEYWARD_TEST_POSTGRES_URL")
	if base == "" {
		t.Fatal("KEYWARD_TEST_STORE=postgres needs KEYWARD_TEST_POSTGRES_URL")
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	name := fmt.Sprintf("kw_test_%d_%d", time.Now().UnixNano(), os.Getpid())
	if _, err := admin.Exec(`CREATE SCHEMA ` + name); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		admin, err := sql.Open("pgx", base)
		if err != nil {
			t.Error(err)
			return
		}
		defer admin.Close()
		if _, err := admin.Exec(`DROP SCHEMA ` + name + ` CASCADE`); err != nil {
			t.Errorf("drop schema: %v", err)
		}
	})
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + "search_path=" + name
}

// open opens the store with e.master; the test closes it at the end.
func (e *env) open() *store.DB {
	e.t.Helper()
	db, err := e.openWith(e.master)
	if err != nil {
		e.t.Fatalf("open store: %v", err)
	}
	e.t.Cleanup(func() {
		if err := db.Close(); err != nil {
			e.t.Errorf("Close: %v", err)
		}
	})
	return db
}

// openWith opens the store's database with the given master key.
func (e *env) openWith(master []byte) (*store.DB, error) {
	return store.Open(e.ctx, e.url, e.dir, store.Options{Sealer: mustSealer(e.t, master), Now: e.clock.Now})
}

// in returns the env bound to a subtest, so that its helpers fail the subtest that called them.
func (e *env) in(t *testing.T) *env {
	c := *e
	c.t, c.ctx = t, t.Context()
	return &c
}

func (e *env) path() string { return filepath.Join(e.dir, store.DatabaseFile) }

// raw opens a second, independent handle on the database: what someone with access to it (an
// attacker, a broken disk, a test) can do behind the store's back.
func (e *env) raw() *sql.DB {
	e.t.Helper()
	// The store's import registers the "sqlite" and "pgx" drivers.
	driver, dsn := "sqlite", "file:"+e.path()+"?_pragma=busy_timeout(5000)"
	if onPostgres() {
		driver, dsn = "pgx", e.url
	}
	raw, err := sql.Open(driver, dsn)
	if err != nil {
		e.t.Fatal(err)
	}
	raw.SetMaxOpenConns(1)
	e.t.Cleanup(func() {
		if err := raw.Close(); err != nil {
			e.t.Errorf("close raw handle: %v", err)
		}
	})
	return raw
}

// failAuditWrites makes the database refuse audit events of the action, a real storage
// failure of exactly the audit write; allowAuditWrites lifts it.
func (e *env) failAuditWrites(raw *sql.DB, action string) {
	e.t.Helper()
	if onPostgres() {
		e.exec(raw, `CREATE FUNCTION fail_audit() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN RAISE EXCEPTION 'simulated audit failure'; END $$`)
		e.exec(raw, `CREATE TRIGGER fail_audit BEFORE INSERT ON audit_events FOR EACH ROW
			WHEN (NEW.action = '`+action+`') EXECUTE FUNCTION fail_audit()`)
		return
	}
	e.exec(raw, `CREATE TRIGGER fail_audit BEFORE INSERT ON audit_events WHEN NEW.action = '`+action+`'
		BEGIN SELECT RAISE(ABORT, 'simulated audit failure'); END`)
}

func (e *env) allowAuditWrites(raw *sql.DB) {
	e.t.Helper()
	if onPostgres() {
		e.exec(raw, `DROP TRIGGER fail_audit ON audit_events`)
		e.exec(raw, `DROP FUNCTION fail_audit()`)
		return
	}
	e.exec(raw, `DROP TRIGGER fail_audit`)
}

func (e *env) exec(raw *sql.DB, query string, args ...any) {
	e.t.Helper()
	if _, err := raw.ExecContext(e.ctx, query, args...); err != nil {
		e.t.Fatalf("%s: %v", query, err)
	}
}

// enroll enrolls a device with a fresh enrollment token.
func (e *env) enroll(hostname, owner string) escrow.Enrolled {
	e.t.Helper()
	tok, err := e.db.CreateEnrollmentToken(e.ctx, adminOrigin, 1, time.Hour)
	if err != nil {
		e.t.Fatalf("CreateEnrollmentToken: %v", err)
	}
	en, err := e.db.Enroll(e.ctx, escrow.Origin{Source: escrow.SourceAgent}, tok.Token,
		escrow.Enrollment{Hostname: hostname, SerialNumber: "SN-" + hostname, OSVersion: "10.0.26100", OwnerUPN: owner})
	if err != nil {
		e.t.Fatalf("Enroll: %v", err)
	}
	if en.DeviceID == "" || len(en.VerificationKey) != 32 {
		e.t.Fatalf("Enroll returned %+v", en)
	}
	return en
}

func passwordRequest(volumeID string, s sample) escrow.EscrowRequest {
	return escrow.EscrowRequest{KeyID: s.keyID, VolumeID: volumeID, MountPoint: "C:", VolumeType: escrow.VolumeOperatingSystem,
		Kind: escrow.KindRecoveryPassword, Material: s.password}
}

// escrowPassword escrows s as a recovery password of the volume and fails the test unless it
// is new.
func (e *env) escrowPassword(en escrow.Enrolled, volumeID string, s sample) {
	e.t.Helper()
	created, err := e.db.Escrow(e.ctx, deviceOrigin(en), en.DeviceID, passwordRequest(volumeID, s))
	if err != nil {
		e.t.Fatalf("Escrow %s: %v", s.keyID, err)
	}
	if !created {
		e.t.Fatalf("Escrow %s: created = false for a new key", s.keyID)
	}
}

// onVolume is an operating-system volume with BitLocker on, a TPM protector and the given
// recovery-password protectors.
func onVolume(volumeID string, keyIDs ...string) escrow.ReportedVolume {
	v := escrow.ReportedVolume{Volume: escrow.Volume{ID: volumeID, MountPoint: "C:", Type: escrow.VolumeOperatingSystem,
		ProtectionStatus: escrow.ProtectionOn, EncryptionStatus: escrow.FullyEncrypted,
		Protectors: []escrow.Protector{{KeyID: "0D1C2B3A-4F5E-4D6C-8B7A-9F8E7D6C5B4A", Type: escrow.ProtectorTPM}}}}
	for _, id := range keyIDs {
		v.Protectors = append(v.Protectors, escrow.Protector{KeyID: id, Type: escrow.ProtectorRecoveryPassword})
	}
	return v
}

func offVolume(volumeID string) escrow.ReportedVolume {
	return escrow.ReportedVolume{Volume: escrow.Volume{ID: volumeID, MountPoint: "D:", Type: escrow.VolumeFixedData,
		ProtectionStatus: escrow.ProtectionOff, EncryptionStatus: escrow.FullyDecrypted}}
}

func (e *env) report(en escrow.Enrolled, r escrow.Report) []escrow.Command {
	e.t.Helper()
	cmds, err := e.db.ApplyReport(e.ctx, deviceOrigin(en), en.DeviceID, r)
	if err != nil {
		e.t.Fatalf("ApplyReport: %v", err)
	}
	return cmds
}

// fingerprint is what the agent sends for a recovery password (SPEC §3).
func fingerprint(verificationKey []byte, password string) string {
	m := hmac.New(sha256.New, verificationKey)
	m.Write([]byte(password))
	return hex.EncodeToString(m.Sum(nil))
}

func (e *env) device(id string) escrow.DeviceDetail {
	e.t.Helper()
	d, err := e.db.GetDevice(e.ctx, adminPrincipal, id)
	if err != nil {
		e.t.Fatalf("GetDevice: %v", err)
	}
	return d
}

func (e *env) status(id string) escrow.EscrowStatus {
	e.t.Helper()
	return e.device(id).Status.Status
}

func (e *env) disclose(deviceID string) escrow.Disclosure {
	e.t.Helper()
	d, err := e.db.Disclose(e.ctx, adminOrigin, deviceID, asAdmin("forgotten PIN"), allowAll)
	if err != nil {
		e.t.Fatalf("Disclose: %v", err)
	}
	return d
}

// keys lists every key matching f (all pages).
func (e *env) keys(f escrow.KeyFilter) []escrow.RecoveryKey {
	e.t.Helper()
	if !f.Scope.All && f.Scope.OwnerUPN == "" && len(f.Scope.Tags) == 0 {
		f.Scope = allScope
	}
	f.Limit = 1000
	keys, next, err := e.db.ListKeys(e.ctx, adminOrigin, f)
	if err != nil {
		e.t.Fatalf("ListKeys: %v", err)
	}
	if next != "" {
		e.t.Fatalf("ListKeys: more than %d keys", f.Limit)
	}
	return keys
}

func (e *env) key(deviceID, keyID string) escrow.RecoveryKey {
	e.t.Helper()
	keys := e.keys(escrow.KeyFilter{DeviceID: deviceID, KeyIDPrefix: keyID})
	if len(keys) != 1 {
		e.t.Fatalf("key %s of device %s: found %d", keyID, deviceID, len(keys))
	}
	return keys[0]
}

// events returns the matching audit events, oldest first.
func (e *env) events(f escrow.AuditFilter) []escrow.AuditEvent {
	e.t.Helper()
	var out []escrow.AuditEvent
	if err := e.db.ListAudit(e.ctx, f, func(ev escrow.AuditEvent) error {
		out = append([]escrow.AuditEvent{ev}, out...)
		return nil
	}); err != nil {
		e.t.Fatalf("ListAudit: %v", err)
	}
	return out
}

func (e *env) countEvents(f escrow.AuditFilter) int {
	e.t.Helper()
	return len(e.events(f))
}

// rotation is a row of the rotations table; the store has no listing of rotations yet, so
// tests read it behind the store's back.
type rotation struct {
	id, volumeID, keyID, status, trigger, newKeyID string
}

func (e *env) rotations(raw *sql.DB, deviceID string) []rotation {
	e.t.Helper()
	rows, err := raw.QueryContext(e.ctx, `SELECT id, volume_id, key_id, status, trigger_kind, new_key_id FROM rotations
		WHERE device_id = $1 ORDER BY requested_at, id`, deviceID)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []rotation
	for rows.Next() {
		var r rotation
		if err := rows.Scan(&r.id, &r.volumeID, &r.keyID, &r.status, &r.trigger, &r.newKeyID); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		e.t.Fatal(err)
	}
	return out
}

func openRotations(rs []rotation) []rotation {
	var out []rotation
	for _, r := range rs {
		if r.status == string(escrow.RotationRequested) || r.status == string(escrow.RotationDelivered) {
			out = append(out, r)
		}
	}
	return out
}

func wantCode(t *testing.T, err error, want escrow.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil, want code %s", want)
	}
	if got := escrow.ErrorCode(err); got != want {
		t.Fatalf("error code = %s, want %s (err: %v)", got, want, err)
	}
}

// containsSecret reports whether s holds the password, hyphenated or as 48 plain digits.
func containsSecret(b []byte, password string) bool {
	return strings.Contains(string(b), password) || strings.Contains(string(b), strings.ReplaceAll(password, "-", ""))
}

// cliOrigin is an admin command run by root, as the keyward CLI records it.
var cliOrigin = escrow.Origin{Actor: escrow.Actor{Type: escrow.ActorSystem, ID: "cli", Name: "root@host"}, Source: escrow.SourceCLI}
