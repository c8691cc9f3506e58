package main

import (
	"bytes"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/keyward/keyward/internal/bitlockertest"
	"github.com/keyward/keyward/internal/recovery"
	"github.com/keyward/keyward/internal/seal"
	"github.com/keyward/keyward/internal/store"
)

// run runs the keyward binary and returns its exit code and output.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command(testBinary(t), args...)
	cmd.Stdout, cmd.Stderr, cmd.Env = &out, &errOut, []string{}
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
}

// withMasterKey returns a new, empty data directory holding a copy of the master key file.
func withMasterKey(t *testing.T, keyFile string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "restored")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if keyFile == "" {
		return dir
	}
	b, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "master.key"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// viewKeys discloses the device's keys through the API and returns key ID → recovery password.
func viewKeys(t *testing.T, url, admin, deviceID string) map[string]string {
	t.Helper()
	var v struct {
		Keys []struct{ KeyID, RecoveryPassword string }
	}
	if err := json.Unmarshal(mustCall(t, 200, "GET", url+"/api/devices/security/bitlocker/keys/"+deviceID+"?reason=restore+check", admin, ""), &v); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, k := range v.Keys {
		got[k.KeyID] = k.RecoveryPassword
	}
	return got
}

// assertNoPlaintext fails if the file holds any of the passwords in any usual form.
func assertNoPlaintext(t *testing.T, path string, passwords []string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, pw := range passwords {
		for _, form := range []string{pw, strings.ReplaceAll(pw, "-", ""), pw[:20]} {
			if bytes.Contains(b, []byte(form)) {
				t.Fatalf("%s holds a recovery password in plain text", filepath.Base(path))
			}
		}
	}
}

// TestBackupWhileServerEscrows takes a backup with the binary while a server process takes
// escrows as fast as it can, then restores it into a new data directory and serves it.
func TestBackupWhileServerEscrows(t *testing.T) {
	dir := t.TempDir()
	p := serveProcess(t, "--data-dir", dir)
	admin, deviceID, deviceToken, _ := setUp(t, p.url, dir)
	mustCall(t, 200, "PUT", p.url+"/api/settings", admin, `{"autoRotateOnDisclosure":false}`)

	var mu sync.Mutex
	acked := map[string]string{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				pw, _ := recovery.GeneratePassword(rand.Reader)
				keyID := strings.ToUpper(uuid.NewString())
				if status, body := call(t, "PUT", p.url+"/api/agent/keys/"+keyID, deviceToken, escrowJSON(pw)); status != 201 {
					t.Errorf("escrow during the backup: %d %s", status, body)
					return
				}
				mu.Lock()
				acked[keyID] = pw
				mu.Unlock()
			}
		})
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 20 || time.Now().After(deadline) {
			break
		}
	}
	mu.Lock()
	before := map[string]string{}
	for k, v := range acked {
		before[k] = v
	}
	mu.Unlock()
	out := filepath.Join(t.TempDir(), "keyward.backup")
	code, stdout, stderr := run(t, "backup", "--data-dir", dir, "--out", out)
	time.Sleep(100 * time.Millisecond) // escrows go on after the snapshot too
	close(stop)
	wg.Wait()
	if code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "backup "+out+": 1 devices, ") || !strings.Contains(stdout, "last seq") || !strings.Contains(stdout, "useless without the master key") {
		t.Errorf("backup printed %q", stdout)
	}

	// One snapshot: every key in the backup has its escrow event in the backup's chain.
	sealer, err := seal.Load(filepath.Join(dir, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := store.OpenBackup(t.Context(), out)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := b.Verify(t.Context(), sealer)
	b.Close()
	if err != nil {
		t.Fatalf("the backup does not verify: %v", err)
	}
	raw, err := sql.Open("sqlite", "file:"+out+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var orphans, keys int
	if err := raw.QueryRow(`SELECT COUNT(*) FROM recovery_keys k WHERE NOT EXISTS (SELECT 1 FROM audit_events e
		WHERE e.action = 'key.escrow' AND e.outcome = 'success' AND e.key_id = k.key_id)`).Scan(&orphans); err != nil {
		t.Fatal(err)
	}
	if err := raw.QueryRow(`SELECT COUNT(*) FROM recovery_keys`).Scan(&keys); err != nil {
		t.Fatal(err)
	}
	if orphans != 0 || int64(keys) != sum.Keys || keys < len(before) {
		t.Errorf("backup holds %d keys (%d acknowledged before it began), %d without their escrow event", keys, len(before), orphans)
	}
	var passwords []string
	for _, pw := range acked {
		passwords = append(passwords, pw)
	}
	assertNoPlaintext(t, out, passwords)

	target := withMasterKey(t, filepath.Join(dir, "master.key"))
	if code, stdout, stderr := run(t, "restore", "--from", out, "--data-dir", target); code != 0 || !strings.Contains(stdout, "restored") {
		t.Fatalf("restore: exit %d: %s %s", code, stdout, stderr)
	}
	restored := serveProcess(t, "--data-dir", target)
	got := viewKeys(t, restored.url, admin, deviceID)
	for keyID, pw := range before {
		if got[keyID] != pw {
			t.Errorf("key %s acknowledged before the backup: not the escrowed password after restore", keyID)
		}
	}
	if len(got) != keys {
		t.Errorf("%d keys served after restore, %d in the backup", len(got), keys)
	}

	// A backup of SQLite restores into PostgreSQL just as well.
	if os.Getenv("KEYWARD_TEST_POSTGRES_URL") != "" {
		dbURL := pgDatabase(t)
		if code, _, stderr := run(t, "restore", "--from", out, "--database-url", dbURL, "--master-key-file", filepath.Join(dir, "master.key")); code != 0 {
			t.Fatalf("restore into PostgreSQL: exit %d: %s", code, stderr)
		}
		pg := serveProcess(t, "--database-url", dbURL, "--master-key-file", filepath.Join(dir, "master.key"), "--data-dir", t.TempDir())
		if got := viewKeys(t, pg.url, admin, deviceID); len(got) != keys {
			t.Errorf("%d keys served from PostgreSQL after restore, %d in the backup", len(got), keys)
		}
	}
}

func TestRestoreRefusesAndChangesNothing(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir, nil)
	_, _, deviceToken, _ := setUp(t, r.URL(), dir)
	for _, s := range bitlockertest.Samples(t)[:3] {
		mustCall(t, 201, "PUT", r.URL()+"/api/agent/keys/"+s.KeyID, deviceToken, escrowJSON(s.Password))
	}
	keyFile := filepath.Join(dir, "master.key")
	out := filepath.Join(t.TempDir(), "keyward.backup")
	if code, _, stderr := cli(t, dir, "", "backup", "--out", out); code != 0 {
		t.Fatalf("backup: %d %s", code, stderr)
	}
	if code, _, stderr := cli(t, dir, "", "backup", "--out", out); code != 1 || !strings.Contains(stderr, out+" already exists") {
		t.Errorf("backup over an existing file: %d %s", code, stderr)
	}
	otherKey := filepath.Join(t.TempDir(), "other.key")
	if _, _, err := seal.LoadOrCreate(otherKey); err != nil {
		t.Fatal(err)
	}
	damaged := func(name string, damage func([]byte) []byte) string {
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(path, damage(b), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	flipped := damaged("flipped.backup", func(b []byte) []byte {
		for i := 100; i < len(b); i += 4096 { // a byte in every page
			b[i] ^= 0x5a
		}
		return b
	})
	truncated := damaged("truncated.backup", func(b []byte) []byte { return b[:len(b)-1000] })

	cases := []struct {
		name   string
		target string
		args   []string
		code   int
		want   string
	}{
		{"non-empty target", dir, []string{"--from", out}, 1, "the destination already holds users; copy into an empty database; the target is unchanged"},
		{"flipped bytes", withMasterKey(t, keyFile), []string{"--from", flipped}, 1, "is damaged"},
		{"truncated", withMasterKey(t, keyFile), []string{"--from", truncated}, 1, "is damaged"},
		{"wrong master key", withMasterKey(t, otherKey), []string{"--from", out}, 1, "made under another master key; nothing was restored"},
		{"no master key", withMasterKey(t, ""), []string{"--from", out}, 1, "no master key at"},
		{"no such backup", withMasterKey(t, keyFile), []string{"--from", out + ".missing"}, 1, "does not exist"},
		{"no --from", withMasterKey(t, keyFile), nil, 2, "give --from"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			snapshot := func() map[string][]byte {
				files, _ := filepath.Glob(filepath.Join(c.target, "*"))
				m := map[string][]byte{}
				for _, f := range files {
					m[f], _ = os.ReadFile(f)
				}
				return m
			}
			_, beforeVerify, _ := cli(t, c.target, "", "audit", "verify")
			before := snapshot()
			code, _, stderr := cli(t, c.target, "", append([]string{"restore"}, c.args...)...)
			if code != c.code || !strings.Contains(stderr, c.want) {
				t.Fatalf("restore: exit %d %q, want %d and %q", code, stderr, c.code, c.want)
			}
			if c.target != dir {
				if after := snapshot(); len(after) != len(before) {
					t.Errorf("files in the target after a refused restore: %v, before: %v", names(after), names(before))
				}
				return
			}
			if _, afterVerify, _ := cli(t, c.target, "", "audit", "verify"); afterVerify != beforeVerify {
				t.Errorf("the target's audit log changed: %q, then %q", beforeVerify, afterVerify)
			}
		})
	}
}

func names(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, filepath.Base(k))
	}
	return out
}

// TestBackupRestorePostgres backs up a PostgreSQL installation while its server runs and
// restores it into a fresh PostgreSQL database.
func TestBackupRestorePostgres(t *testing.T) {
	src := pgDatabase(t)
	c := newCluster(t, src, 1)
	id, token := enrollAt(t, c.servers[0].url, c.admin, "LT-PG")
	var passwords []string
	for _, s := range bitlockertest.Samples(t)[:4] {
		mustCall(t, 201, "PUT", c.servers[0].url+"/api/agent/keys/"+s.KeyID, token, escrowJSON(s.Password))
		passwords = append(passwords, s.Password)
	}
	want := viewKeys(t, c.servers[0].url, c.admin, id)

	out := filepath.Join(t.TempDir(), "keyward.backup")
	if code, stdout, stderr := run(t, "backup", "--database-url", src, "--master-key-file", c.keyFile, "--out", out); code != 0 || !strings.Contains(stdout, "4 keys") {
		t.Fatalf("backup: exit %d: %s %s", code, stdout, stderr)
	}
	assertNoPlaintext(t, out, passwords)
	dst := pgDatabase(t)
	if code, _, stderr := run(t, "restore", "--from", out, "--database-url", dst, "--master-key-file", c.keyFile); code != 0 {
		t.Fatalf("restore: exit %d: %s", code, stderr)
	}
	if code, _, stderr := run(t, "restore", "--from", out, "--database-url", dst, "--master-key-file", c.keyFile); code != 1 || !strings.Contains(stderr, "already holds") {
		t.Errorf("second restore into the same database: exit %d: %s", code, stderr)
	}
	p := serveProcess(t, "--database-url", dst, "--master-key-file", c.keyFile, "--data-dir", t.TempDir())
	got := viewKeys(t, p.url, c.admin, id)
	for keyID, pw := range want {
		if got[keyID] != pw {
			t.Errorf("key %s after restore into PostgreSQL: not the escrowed password", keyID)
		}
	}
	if code, stdout, stderr := run(t, "audit", "verify", "--database-url", dst, "--master-key-file", c.keyFile); code != 0 {
		t.Fatalf("audit verify after restore: %d %s %s", code, stdout, stderr)
	}
	// The backup of the source is in the source's log.
	b := mustCall(t, 200, "GET", c.servers[0].url+"/api/devices/security/bitlocker/keys/audit?action=store.backup", c.admin, "")
	if !strings.Contains(string(b), out) {
		t.Errorf("no store.backup event naming %s in the source's log: %s", out, b)
	}
}
