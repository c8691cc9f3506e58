package seal_test

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/seal"
	"github.com/keyward/keyward/internal/testkit"
)

// keyFile writes a new master key file and returns its path.
func keyFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "master.key")
	if err := os.WriteFile(path, generate(t), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustLoad(t *testing.T, path string) *seal.Sealer {
	t.Helper()
	s, err := seal.Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return s
}

// loggedSealer loads a new key file with a logger writing to the returned buffer.
func loggedSealer(t *testing.T) (string, *seal.Sealer, *testkit.Buffer) {
	t.Helper()
	path := keyFile(t)
	logs := &testkit.Buffer{}
	s := mustLoad(t, path)
	s.SetLogger(slog.New(slog.NewTextHandler(logs, nil)))
	return path, s, logs
}

func mustAddKey(t *testing.T, path string) uint32 {
	t.Helper()
	id, err := seal.AddKey(path)
	if err != nil {
		t.Fatalf("AddKey: %v", err)
	}
	return id
}

func wrappingKey(t *testing.T, s seal.Sealed) uint32 {
	t.Helper()
	id, err := seal.WrappingKeyID(s.WrappedKey)
	if err != nil {
		t.Fatalf("WrappingKeyID: %v", err)
	}
	return id
}

func mustOpen(t *testing.T, s *seal.Sealer, sealed seal.Sealed, aad []byte) {
	t.Helper()
	if pt, err := s.Open(sealed, aad); err != nil || string(pt) != recoveryPassword {
		t.Fatalf("Open = %q, %v; want the sealed password", pt, err)
	}
}

func TestWrappingKeyID(t *testing.T) {
	path := keyFile(t)
	s := mustLoad(t, path)
	aad := seal.AAD("key", "dev-1", "KEY-A")
	sealed := mustSeal(t, s, recoveryPassword, aad)
	if got := wrappingKey(t, sealed); got != s.PrimaryKeyID() || got == 0 {
		t.Fatalf("WrappingKeyID = %d, want the primary %d", got, s.PrimaryKeyID())
	}
	// The ID is in the clear: it is not taken from the ciphertext's
	// authenticated content, so flipping a byte after it keeps it.
	flipped := bytes.Clone(sealed.WrappedKey)
	flipped[len(flipped)-1] ^= 1
	if id, err := seal.WrappingKeyID(flipped); err != nil || id != s.PrimaryKeyID() {
		t.Fatalf("WrappingKeyID of a damaged tail = %d, %v", id, err)
	}

	hostile := []struct {
		name    string
		wrapped []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"one byte", []byte{0x12}},
		{"length beyond end", []byte{0x12, 0x20, 0x01, 0, 0, 0, 1}},
		{"encrypted keyset too short", []byte{0x12, 0x04, 0x01, 0, 0, 0}},
		{"no Tink prefix", []byte{0x12, 0x05, 0x00, 0, 0, 0, 1}},
		{"random bytes", randomBytes(t, 120)},
	}
	for _, tc := range hostile {
		t.Run(tc.name, func(t *testing.T) {
			if id, err := seal.WrappingKeyID(tc.wrapped); err == nil {
				t.Fatalf("WrappingKeyID = %d, want an error", id)
			}
		})
	}
	if id, err := seal.WrappingKeyID([]byte{0x12, 0x05, 0x01, 0xde, 0xad, 0xbe, 0xef}); err != nil || id != 0xdeadbeef {
		t.Fatalf("WrappingKeyID of a minimal value = %#x, %v", id, err)
	}
}

func TestAddKeyAndRemoveKeys(t *testing.T) {
	path := keyFile(t)
	before := mustLoad(t, path)
	oldID := before.PrimaryKeyID()
	aad := seal.AAD("key", "dev-1", "KEY-A")
	old := mustSeal(t, before, recoveryPassword, aad)

	newID := mustAddKey(t, path)
	if newID == oldID {
		t.Fatal("AddKey returned the old primary's ID")
	}
	if fi, err := os.Stat(path); err != nil || (runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600) {
		t.Fatalf("key file after AddKey: %v %v", fi.Mode(), err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Fatalf("directory holds %d entries after AddKey, want only the key file", len(entries))
	}
	rotated := mustLoad(t, path)
	if rotated.PrimaryKeyID() != newID || !slices.Equal(rotated.KeyIDs(), sortedIDs(oldID, newID)) {
		t.Fatalf("after AddKey: primary %d, keys %v; want primary %d of %v", rotated.PrimaryKeyID(), rotated.KeyIDs(), newID, sortedIDs(oldID, newID))
	}
	mustOpen(t, rotated, old, aad)
	if got := wrappingKey(t, mustSeal(t, rotated, recoveryPassword, aad)); got != newID {
		t.Fatalf("new values wrapped by %d, want the new primary %d", got, newID)
	}
	rewrapped, err := rotated.Rewrap(old, aad)
	if err != nil {
		t.Fatalf("Rewrap: %v", err)
	}
	if got := wrappingKey(t, rewrapped); got != newID {
		t.Fatalf("re-wrapped value wrapped by %d, want %d", got, newID)
	}

	if err := seal.RemoveKeys(path, []uint32{newID}); err == nil || !strings.Contains(err.Error(), "primary") {
		t.Fatalf("RemoveKeys of the primary: err = %v, want a refusal", err)
	}
	if err := seal.RemoveKeys(path, []uint32{oldID, 12345}); err != nil {
		t.Fatalf("RemoveKeys: %v", err)
	}
	retired := mustLoad(t, path)
	if !slices.Equal(retired.KeyIDs(), []uint32{newID}) {
		t.Fatalf("after RemoveKeys the file holds keys %v, want only %d", retired.KeyIDs(), newID)
	}
	mustOpen(t, retired, rewrapped, aad)
	if _, err := retired.Open(old, aad); !errors.Is(err, seal.ErrOpen) {
		t.Fatalf("a value wrapped by the removed key: err = %v, want ErrOpen", err)
	}
	if raw, _ := os.ReadFile(path); bytes.Contains(raw, []byte(`"keyId": `+itoa(oldID))) || bytes.Contains(raw, []byte(`"keyId":`+itoa(oldID))) {
		t.Fatal("the removed key's ID is still in the file")
	}
}

func TestAddKeyRefusesBadFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, content string
		mode          os.FileMode
		want          string
	}{
		{"damaged", `{"primaryKeyId": 1, "key": [`, 0o600, "damaged"},
		{"empty", "", 0o600, "empty"},
		{"readable by others", string(generate(t)), 0o644, "chmod 600"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.mode&0o004 != 0 && runtime.GOOS == "windows" {
				t.Skip("mode bits do not reflect Windows ACLs")
			}
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			writeFile(t, path, []byte(tc.content), tc.mode)
			if _, err := seal.AddKey(path); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("AddKey: err = %v, want one saying %q", err, tc.want)
			}
			if after, _ := os.ReadFile(path); string(after) != tc.content {
				t.Fatal("AddKey changed a file it refused")
			}
		})
	}
	if _, err := seal.AddKey(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("AddKey created a key file")
	}
}

// TestReloadOnUnknownKeyID is two servers with their own copies of the key
// file: one rotates and re-wraps, the other meets a re-wrapped value and
// re-reads its copy, which the operator has already replaced.
func TestReloadOnUnknownKeyID(t *testing.T) {
	path, server, logs := loggedSealer(t)
	aad := seal.AAD("key", "dev-1", "KEY-A")
	sealed := mustSeal(t, server, recoveryPassword, aad)

	newID := mustAddKey(t, path)
	rewrapped, err := mustLoad(t, path).Rewrap(sealed, aad)
	if err != nil {
		t.Fatalf("Rewrap: %v", err)
	}
	mustOpen(t, server, rewrapped, aad)
	if server.PrimaryKeyID() != newID {
		t.Fatalf("after reading the file again the primary is %d, want %d", server.PrimaryKeyID(), newID)
	}
	if !strings.Contains(logs.String(), "master key file read again") || !strings.Contains(logs.String(), "not loaded") {
		t.Fatalf("the reload was not logged:\n%s", logs.String())
	}
	key, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	assertNoKeyMaterial(t, logs.String(), keyValues(t, key))

	// A value wrapped by a key no file has does not open, and costs at most
	// one read of the file per second however often it is tried.
	stranger := mustSeal(t, newSealer(t), recoveryPassword, aad)
	for range 5 {
		if _, err := server.Open(stranger, aad); !errors.Is(err, seal.ErrOpen) {
			t.Fatalf("Open of a value wrapped by an unknown key: err = %v, want ErrOpen", err)
		}
	}
	if n := strings.Count(logs.String(), "master key file read again"); n > 2 {
		t.Fatalf("the file was read %d times, want at most once for the unknown key", n-1)
	}
}

func TestReloadKeepsKeysWhenFileInvalid(t *testing.T) {
	path, s, logs := loggedSealer(t)
	aad := seal.AAD("key", "dev-1", "KEY-A")
	sealed := mustSeal(t, s, recoveryPassword, aad)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	bad := []struct{ name, content string }{
		{"truncated", string(good[:len(good)/2])},
		{"empty", ""},
		{"not a keyset", `{"hello": "world"}`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := s.Reload(); err == nil || !strings.Contains(err.Error(), path) {
				t.Fatalf("Reload of a %s file: err = %v, want an error naming the file", tc.name, err)
			}
			mustOpen(t, s, sealed, aad)
			mustOpen(t, s, mustSeal(t, s, recoveryPassword, aad), aad)
		})
	}
	if !strings.Contains(logs.String(), "still using the keys loaded before") {
		t.Fatalf("the failed reload was not logged:\n%s", logs.String())
	}
	assertNoKeyMaterial(t, logs.String(), keyValues(t, good))

	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	newID := mustAddKey(t, path)
	if err := s.Reload(); err != nil {
		t.Fatalf("Reload of the repaired file: %v", err)
	}
	if s.PrimaryKeyID() != newID {
		t.Fatalf("primary %d after Reload, want %d", s.PrimaryKeyID(), newID)
	}
	mustOpen(t, s, sealed, aad)
}

// TestSealPicksUpNewPrimary: a server whose key file is replaced by a rotation
// seals new values under the new primary without a restart.
func TestSealPicksUpNewPrimary(t *testing.T) {
	path := keyFile(t)
	s := mustLoad(t, path)
	aad := seal.AAD("key", "dev-1", "KEY-A")
	mustSeal(t, s, recoveryPassword, aad)
	newID := mustAddKey(t, path)
	deadline := time.Now().Add(5 * time.Second)
	for wrappingKey(t, mustSeal(t, s, recoveryPassword, aad)) != newID {
		if time.Now().After(deadline) {
			t.Fatal("new values are still wrapped by the old primary 5s after the file changed")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestNewHasNoFileToReload(t *testing.T) {
	s := newSealer(t)
	if err := s.Reload(); err != nil {
		t.Fatalf("Reload of a Sealer without a file: %v", err)
	}
	var zero seal.Sealer
	if zero.PrimaryKeyID() != 0 || zero.KeyIDs() != nil || zero.Reload() != nil {
		t.Fatal("a zero Sealer reports keys")
	}
}

func sortedIDs(ids ...uint32) []uint32 {
	slices.Sort(ids)
	return ids
}

func itoa(id uint32) string { return strconv.FormatUint(uint64(id), 10) }
