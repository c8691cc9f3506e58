package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/keyward/keyward/internal/recovery"
	"github.com/keyward/keyward/internal/seal"
)

// keyset returns the primary key ID and every key ID of a master key file, and its key values.
func keyset(t *testing.T, path string) (primary uint32, ids []uint32, values []string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ks struct {
		PrimaryKeyID uint32 `json:"primaryKeyId"`
		Key          []struct {
			KeyID   uint32 `json:"keyId"`
			KeyData struct{ Value string }
		}
	}
	if err := json.Unmarshal(b, &ks); err != nil {
		t.Fatalf("master key file: %v", err)
	}
	for _, k := range ks.Key {
		ids = append(ids, k.KeyID)
		values = append(values, k.KeyData.Value)
	}
	slices.Sort(ids)
	return ks.PrimaryKeyID, ids, values
}

// escrowed is what a client has escrowed and seen acknowledged, by key ID.
type escrowed struct {
	mu   sync.Mutex
	keys map[string]string
}

// escrowNew escrows a new recovery password on the server and remembers it once acknowledged.
func (e *escrowed) escrowNew(url, deviceToken string) error {
	pw, err := recovery.GeneratePassword(rand.Reader)
	if err != nil {
		return err
	}
	keyID := strings.ToUpper(uuid.NewString())
	req, _ := http.NewRequest("PUT", url+"/api/agent/keys/"+keyID, strings.NewReader(escrowJSON(pw)))
	req.Header.Set("Authorization", "Bearer "+deviceToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode != 201 {
		return fmt.Errorf("escrow answered %d", res.StatusCode)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.keys == nil {
		e.keys = map[string]string{}
	}
	e.keys[keyID] = pw
	return nil
}

// assertViewable views the device through the API and checks every escrowed key's password.
func (e *escrowed) assertViewable(t *testing.T, url, admin, deviceID string) {
	t.Helper()
	status, body := call(t, "GET", url+"/api/devices/security/bitlocker/keys/"+deviceID+"?reason=after+rotation", admin, "")
	if status != 200 {
		t.Fatalf("view on %s: %d %s", url, status, body)
	}
	var v struct {
		Keys []struct{ KeyID, RecoveryPassword string }
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, k := range v.Keys {
		got[k.KeyID] = k.RecoveryPassword
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for id, pw := range e.keys {
		if got[id] != pw {
			t.Errorf("key %s on %s: viewed material is not the escrowed password (present: %v)", id, url, got[id] != "")
		}
	}
}

func TestMasterKeyRotationWithServerOnline(t *testing.T) {
	dir := t.TempDir()
	p := serveProcess(t, "--data-dir", dir)
	admin, deviceID, deviceToken, _ := setUp(t, p.url, dir)
	mustCall(t, 200, "PUT", p.url+"/api/settings", admin, `{"autoRotateOnDisclosure":false}`)
	keyFile := filepath.Join(dir, "master.key")
	oldPrimary, _, oldValues := keyset(t, keyFile)
	oldFile := filepath.Join(t.TempDir(), "old-master.key")
	if b, err := os.ReadFile(keyFile); err != nil || os.WriteFile(oldFile, b, 0o600) != nil {
		t.Fatalf("keeping the old key file: %v", err)
	}
	var keys escrowed
	for range 10 {
		if err := keys.escrowNew(p.url, deviceToken); err != nil {
			t.Fatal(err)
		}
	}

	// A client keeps escrowing and viewing while the rotation runs.
	stop, done := make(chan struct{}), make(chan struct{})
	var clientErrs []error
	var rounds int
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			rounds++
			if err := keys.escrowNew(p.url, deviceToken); err != nil {
				clientErrs = append(clientErrs, err)
			}
			res, err := http.Get(p.url + "/readyz")
			if err == nil {
				res.Body.Close()
			}
			req, _ := http.NewRequest("GET", p.url+"/api/devices/security/bitlocker/keys/"+deviceID+"?reason=during+rotation", nil)
			req.Header.Set("Authorization", "Bearer "+admin)
			if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != 200 {
				clientErrs = append(clientErrs, fmt.Errorf("view during the rotation: %v %v", res, err))
			} else {
				res.Body.Close()
			}
		}
	}()
	time.Sleep(200 * time.Millisecond)
	code, rotateOut, stderr := cli(t, dir, "", "master-key", "rotate", "--batch-size", "4")
	time.Sleep(200 * time.Millisecond)
	close(stop)
	<-done
	if code != 0 || !strings.Contains(rotateOut, "every sealed value is wrapped by master key ID") {
		t.Fatalf("master-key rotate: exit %d\n%s%s", code, rotateOut, stderr)
	}
	if len(clientErrs) > 0 || rounds < 3 {
		t.Fatalf("the client saw %d errors in %d rounds during the rotation: %v", len(clientErrs), rounds, clientErrs)
	}
	newPrimary, ids, _ := keyset(t, keyFile)
	if newPrimary == oldPrimary || !slices.Equal(ids, sortedIDs(oldPrimary, newPrimary)) {
		t.Fatalf("after rotate the file has primary %d and keys %v; want a new primary beside %d", newPrimary, ids, oldPrimary)
	}
	keys.assertViewable(t, p.url, admin, deviceID)

	code, retireOut, stderr := cli(t, dir, "", "master-key", "retire")
	if code != 0 || !strings.Contains(retireOut, "Backups") {
		t.Fatalf("master-key retire: exit %d\n%s%s", code, retireOut, stderr)
	}
	if _, ids, _ := keyset(t, keyFile); !slices.Equal(ids, []uint32{newPrimary}) {
		t.Fatalf("after retire the file holds keys %v, want only %d", ids, newPrimary)
	}
	// The server, never restarted, still serves every key and takes new ones.
	if err := keys.escrowNew(p.url, deviceToken); err != nil {
		t.Fatal(err)
	}
	keys.assertViewable(t, p.url, admin, deviceID)
	if code, out, stderr := cli(t, dir, "", "audit", "verify"); code != 0 {
		t.Fatalf("audit verify: %d %s%s", code, out, stderr)
	}
	for _, v := range oldValues {
		if strings.Contains(rotateOut+retireOut, v) {
			t.Fatal("the old key's material appears in the commands' output")
		}
	}

	// A server started with the old key file alone no longer opens this database.
	p.stop()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, testBinary(t), "serve", "--listen", "127.0.0.1:0", "--data-dir", dir, "--master-key-file", oldFile).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "does not match the database") {
		t.Fatalf("serve with the retired key file: %v\n%s", err, out)
	}
}

func TestMasterKeyRetireRefusedWhileOldKeyInUse(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir, nil)
	admin, deviceID, deviceToken, _ := setUp(t, r.URL(), dir)
	var keys escrowed
	for range 3 {
		if err := keys.escrowNew(r.URL(), deviceToken); err != nil {
			t.Fatal(err)
		}
	}
	keyFile := filepath.Join(dir, "master.key")
	oldPrimary, _, _ := keyset(t, keyFile)
	var outputs bytes.Buffer
	run := func(wantCode int, args ...string) string {
		t.Helper()
		code, out, stderr := cli(t, dir, "", args...)
		outputs.WriteString(out + stderr)
		if code != wantCode {
			t.Fatalf("keyward %v: exit %d, want %d\n%s%s", args, code, wantCode, out, stderr)
		}
		return out + stderr
	}

	if out := run(0, "master-key", "rotate", "--no-rewrap"); !strings.Contains(out, "copy "+keyFile+" to every server") {
		t.Fatalf("rotate --no-rewrap said %q", out)
	}
	out := run(1, "master-key", "retire")
	if !strings.Contains(out, fmt.Sprintf("values are still wrapped by master key ID %d", oldPrimary)) || !strings.Contains(out, "master-key rewrap") {
		t.Fatalf("retire while the old key is in use said %q", out)
	}
	if _, ids, _ := keyset(t, keyFile); len(ids) != 2 {
		t.Fatalf("a refused retire changed the key file: keys %v", ids)
	}
	if out := run(0, "master-key", "status"); !strings.Contains(out, fmt.Sprintf("master key ID %d\told\twraps", oldPrimary)) {
		t.Fatalf("status said %q", out)
	}
	run(0, "master-key", "rewrap")
	run(0, "master-key", "retire")
	keys.assertViewable(t, r.URL(), admin, deviceID)
	if out := run(0, "master-key", "retire"); !strings.Contains(out, "nothing to retire") {
		t.Fatalf("a second retire said %q", out)
	}

	other := filepath.Join(t.TempDir(), "other.key")
	key, err := seal.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(other, key, 0o600); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		name string
		code int
		args []string
		want string
	}{
		{"unknown subcommand", 2, []string{"master-key", "frobnicate"}, "Usage"},
		{"batch size 0", 2, []string{"master-key", "rewrap", "--batch-size", "0"}, "--batch-size must be at least 1"},
		{"missing key file", 1, []string{"master-key", "rotate", "--master-key-file", filepath.Join(dir, "nope.key")}, "nope.key"},
		{"another installation's key", 1, []string{"master-key", "rotate", "--master-key-file", other}, "does not match the database; nothing was changed"},
		{"extra argument", 2, []string{"master-key", "retire", "now"}, "unexpected argument"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if out := run(tc.code, tc.args...); !strings.Contains(out, tc.want) {
				t.Fatalf("said %q, want %q", out, tc.want)
			}
		})
	}
	if _, ids, _ := keyset(t, other); len(ids) != 1 {
		t.Fatal("a refused rotate changed the other key file")
	}
	for _, f := range []string{keyFile, other} {
		_, _, values := keyset(t, f)
		for _, v := range values {
			if strings.Contains(outputs.String(), v) {
				t.Fatal("key material appears in the commands' output")
			}
		}
	}
}

// TestMasterKeyRotationAcrossServers follows the documented procedure for several servers on
// one PostgreSQL database, each with its own copy of the key file.
func TestMasterKeyRotationAcrossServers(t *testing.T) {
	dbURL := pgDatabase(t)
	master, err := seal.Generate()
	if err != nil {
		t.Fatal(err)
	}
	fileA, fileB := filepath.Join(t.TempDir(), "master.key"), filepath.Join(t.TempDir(), "master.key")
	for _, f := range []string{fileA, fileB} {
		if err := os.WriteFile(f, master, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	a := serveProcess(t, "--database-url", dbURL, "--master-key-file", fileA, "--data-dir", t.TempDir())
	b := serveProcess(t, "--database-url", dbURL, "--master-key-file", fileB, "--data-dir", t.TempDir())
	admin := adminToken(t, dbURL, fileA)
	id, token := enrollAt(t, a.url, admin, "LT-ROTATE")
	var keys escrowed
	for i := range 6 {
		if err := keys.escrowNew([]string{a.url, b.url}[i%2], token); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := Run(t.Context(), append(args, "--database-url", dbURL, "--master-key-file", fileA), nil, &out, &errOut, func(string) string { return "" }); code != 0 {
			t.Fatalf("keyward %v: %d %s%s", args, code, out.String(), errOut.String())
		}
		return out.String()
	}
	// copyKey installs server A's file on server B as an operator would: whole, by rename.
	copyKey := func() {
		t.Helper()
		b, err := os.ReadFile(fileA)
		if err != nil {
			t.Fatal(err)
		}
		tmp := fileB + ".new"
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, fileB); err != nil {
			t.Fatal(err)
		}
	}

	run("master-key", "rotate", "--no-rewrap")
	copyKey()
	run("master-key", "rewrap")
	for _, srv := range []string{a.url, b.url} {
		keys.assertViewable(t, srv, admin, id)
		if err := keys.escrowNew(srv, token); err != nil {
			t.Fatal(err)
		}
	}
	run("master-key", "retire")
	copyKey()
	newPrimary, _, _ := keyset(t, fileB)
	for _, srv := range []string{a.url, b.url} {
		if err := keys.escrowNew(srv, token); err != nil {
			t.Fatal(err)
		}
		keys.assertViewable(t, srv, admin, id)
	}
	if out := run("master-key", "status"); !strings.Contains(out, fmt.Sprintf("master key ID %d\tprimary\twraps", newPrimary)) || strings.Contains(out, "old") {
		t.Fatalf("status after retiring: %q", out)
	}
	var out, errOut bytes.Buffer
	if code := Run(t.Context(), []string{"audit", "verify", "--database-url", dbURL, "--master-key-file", fileB}, nil, &out, &errOut, func(string) string { return "" }); code != 0 {
		t.Fatalf("audit verify: %d %s", code, errOut.String())
	}
}

func sortedIDs(ids ...uint32) []uint32 {
	slices.Sort(ids)
	return ids
}
