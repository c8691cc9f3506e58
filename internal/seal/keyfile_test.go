package seal_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/mac"

	"github.com/keyward/keyward/internal/seal"
)

// keyValues returns the base64 key material in a JSON keyset.
func keyValues(t *testing.T, keyJSON []byte) []string {
	t.Helper()
	var ks struct {
		Key []struct {
			KeyData struct {
				Value string `json:"value"`
			} `json:"keyData"`
		} `json:"key"`
	}
	if err := json.Unmarshal(keyJSON, &ks); err != nil {
		t.Fatalf("parsing test keyset: %v", err)
	}
	var vs []string
	for _, k := range ks.Key {
		if len(k.KeyData.Value) < 16 {
			t.Fatalf("test keyset has implausibly short key value %q", k.KeyData.Value)
		}
		vs = append(vs, k.KeyData.Value)
	}
	return vs
}

// assertNoKeyMaterial fails if msg contains any 12-character run of any of
// values: a truncated file may hold only part of a key, and even part must
// not leak.
func assertNoKeyMaterial(t *testing.T, msg string, values []string) {
	t.Helper()
	for _, v := range values {
		for i := 0; i+12 <= len(v); i++ {
			if strings.Contains(msg, v[i:i+12]) {
				t.Fatalf("error %q contains key material %q", msg, v[i:i+12])
			}
		}
	}
}

func writeFile(t *testing.T, path string, b []byte, perm fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, b, perm); err != nil {
		t.Fatal(err)
	}
	// WriteFile's mode is filtered by the umask; tests need it exact.
	if err := os.Chmod(path, perm); err != nil {
		t.Fatal(err)
	}
}

func hmacKeysetJSON(t *testing.T) []byte {
	t.Helper()
	h, err := keyset.NewHandle(mac.HMACSHA256Tag256KeyTemplate())
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := insecurecleartextkeyset.Write(h, keyset.NewJSONWriter(&buf)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestLoadDamaged(t *testing.T) {
	good := generate(t)
	goodValues := keyValues(t, good)
	hmacJSON := hmacKeysetJSON(t)

	tests := []struct {
		name    string
		content []byte
		values  []string // key material that must not appear in the error
		want    string
	}{
		{"empty file", []byte{}, nil, "is empty"},
		{"only whitespace", []byte(" \n\t\n"), nil, "is empty"},
		{"truncated JSON", good[:len(good)/2], goodValues, "is damaged or not a Keyward master key"},
		{"truncated just before the end", good[:len(good)-3], goodValues, "is damaged or not a Keyward master key"},
		{"random bytes", randomBytes(t, 200), nil, "is damaged or not a Keyward master key"},
		{"JSON but not a keyset", []byte(`{"hello":"world"}`), nil, "is damaged or not a Keyward master key"},
		{"JSON array", []byte(`[1,2,3]`), nil, "is damaged or not a Keyward master key"},
		{"empty JSON object", []byte(`{}`), nil, "holds no keys"},
		{"keyset nested in other JSON", []byte(`{"masterKey":` + string(good) + `}`), goodValues, "is damaged or not a Keyward master key"},
		{"invalid base64 in key value", bytes.Replace(good, []byte(`"value":"`), []byte(`"value":"!`), 1), goodValues, "is damaged or not a Keyward master key"},
		{"primary key ID not in keyset", regexp.MustCompile(`"primaryKeyId":\s*\d+`).ReplaceAll(good, []byte(`"primaryKeyId":1`)), goodValues, "no enabled primary key"},
		{"primary key disabled", bytes.Replace(good, []byte(`"ENABLED"`), []byte(`"DISABLED"`), 1), goodValues, "no enabled primary key"},
		{"HMAC keyset", hmacJSON, keyValues(t, hmacJSON), "not an AEAD keyset"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "master.key")
			writeFile(t, path, tc.content, 0o600)
			for name, load := range map[string]func() error{
				"Load":         func() error { _, err := seal.Load(path); return err },
				"LoadOrCreate": func() error { _, _, err := seal.LoadOrCreate(path); return err },
			} {
				err := load()
				if err == nil {
					t.Fatalf("%s succeeded on a damaged key file", name)
				}
				msg := err.Error()
				if !strings.Contains(msg, path) {
					t.Errorf("%s: error %q does not name the file", name, msg)
				}
				if !strings.Contains(msg, tc.want) {
					t.Errorf("%s: error %q does not contain %q", name, msg, tc.want)
				}
				assertNoKeyMaterial(t, msg, tc.values)
			}
			_, err := seal.New(tc.content)
			if err == nil {
				t.Fatal("New succeeded on damaged key bytes")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: error %q does not contain %q", err, tc.want)
			}
			assertNoKeyMaterial(t, err.Error(), tc.values)

			// A damaged file must never be replaced: it may be the only copy
			// of a key that opens the database.
			after, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(after, tc.content) {
				t.Fatalf("key file changed after failed load (err %v)", err)
			}
		})
	}
}

func TestLoadMissing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "master.key")
	_, err := seal.Load(path)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Load of missing file: err = %v, want fs.ErrNotExist naming %s", err, path)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load created the file (stat err %v)", err)
	}

	noDir := filepath.Join(dir, "missing", "master.key")
	if _, _, err := seal.LoadOrCreate(noDir); err == nil || !strings.Contains(err.Error(), noDir) {
		t.Fatalf("LoadOrCreate with missing parent dir: err = %v, want an error naming %s", err, noDir)
	}
}

func TestLoadNotRegular(t *testing.T) {
	dir := t.TempDir()
	if _, err := seal.Load(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("Load of a directory: err = %v", err)
	}
}

func TestLoadOrCreate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "master.key")

	s1, created, err := seal.LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("first LoadOrCreate = created %v, err %v; want created", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode = %04o, want 0600", fi.Mode().Perm())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries after create, want only the key file (temporary file left behind?)", len(entries))
	}

	s2, created, err := seal.LoadOrCreate(path)
	if err != nil || created {
		t.Fatalf("second LoadOrCreate = created %v, err %v; want loaded", created, err)
	}
	s3, err := seal.Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}

	aad := seal.AAD("key", "dev-1", "KEY-A")
	sealed := mustSeal(t, s1, recoveryPassword, aad)
	for name, s := range map[string]*seal.Sealer{"LoadOrCreate": s2, "Load": s3} {
		if pt, err := s.Open(sealed, aad); err != nil || string(pt) != recoveryPassword {
			t.Fatalf("%s: Open of value sealed before reload = %q, %v", name, pt, err)
		}
	}
}

func TestLoadPermissions(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("mode bits do not reflect Windows ACLs; the check is disabled there")
	}
	tests := []struct {
		name    string
		perm    fs.FileMode
		wantErr string // empty: must load
	}{
		{"owner only", 0o600, ""},
		{"owner read-only", 0o400, ""},
		{"group readable", 0o640, ""},
		{"group writable", 0o660, "writable by its group (mode 0660); run chmod 600 on it"},
		{"group write only", 0o620, "writable by its group"},
		{"world readable", 0o644, "readable by other users (mode 0644); run chmod 600 on it"},
		{"world writable only", 0o602, "accessible by other users (mode 0602); run chmod 600 on it"},
		{"wide open", 0o777, "chmod 600"},
	}
	key := generate(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "master.key")
			writeFile(t, path, key, tc.perm)
			_, err := seal.Load(path)
			_, _, err2 := seal.LoadOrCreate(path)
			for _, err := range []error{err, err2} {
				if tc.wantErr == "" {
					if err != nil {
						t.Fatalf("load: %v", err)
					}
					continue
				}
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), path) {
					t.Fatalf("load: err = %v, want one naming %s and containing %q", err, path, tc.wantErr)
				}
				assertNoKeyMaterial(t, err.Error(), keyValues(t, key))
			}
		})
	}
}

func TestLoadOrCreateRace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "master.key")
	const n = 8
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		sealers [n]*seal.Sealer
		created [n]bool
		errs    [n]error
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			sealers[i], created[i], errs[i] = seal.LoadOrCreate(path)
		}()
	}
	close(start)
	wg.Wait()

	nCreated := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("goroutine %d: %v", i, errs[i])
		}
		if created[i] {
			nCreated++
		}
	}
	if nCreated != 1 {
		t.Errorf("%d goroutines report creating the key file, want exactly 1", nCreated)
	}
	aad := seal.AAD("key", "dev-1", "KEY-A")
	for i, a := range sealers {
		sealed := mustSeal(t, a, recoveryPassword, aad)
		for j, b := range sealers {
			if pt, err := b.Open(sealed, aad); err != nil || string(pt) != recoveryPassword {
				t.Fatalf("value sealed by goroutine %d does not open with goroutine %d's key: %q, %v", i, j, pt, err)
			}
		}
	}
}

func TestGenerate(t *testing.T) {
	a, b := generate(t), generate(t)
	if bytes.Equal(a, b) {
		t.Fatal("Generate returned the same key twice")
	}
	if !json.Valid(a) {
		t.Fatalf("Generate output is not JSON")
	}
	h, err := insecurecleartextkeyset.Read(keyset.NewJSONReader(bytes.NewReader(a)))
	if err != nil {
		t.Fatalf("Generate output is not a Tink keyset: %v", err)
	}
	info := h.KeysetInfo()
	if len(info.GetKeyInfo()) != 1 || info.GetKeyInfo()[0].GetTypeUrl() != "type.googleapis.com/google.crypto.tink.AesGcmKey" {
		t.Fatalf("Generate keyset = %v, want one AES-GCM key", info)
	}
}
