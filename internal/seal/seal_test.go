package seal_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strconv"
	"testing"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"

	"github.com/keyward/keyward/internal/seal"
)

// recoveryPassword has the shape of a BitLocker recovery password: 8 groups
// of 6 digits, 55 characters.
const recoveryPassword = "123456-234567-345678-456789-567890-678901-789012-890123"

func generate(t testing.TB) []byte {
	t.Helper()
	b, err := seal.Generate()
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return b
}

func newSealer(t testing.TB) *seal.Sealer {
	t.Helper()
	s, err := seal.New(generate(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func mustSeal(t testing.TB, s *seal.Sealer, plaintext string, aad []byte) seal.Sealed {
	t.Helper()
	sealed, err := s.Seal([]byte(plaintext), aad)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return sealed
}

func TestRoundTrip(t *testing.T) {
	s := newSealer(t)
	tests := []struct {
		name      string
		plaintext []byte
		aad       []byte
	}{
		{"recovery password", []byte(recoveryPassword), seal.AAD("key", "dev-1", "KEY-A")},
		{"empty plaintext", []byte{}, seal.AAD("key", "dev-1", "KEY-A")},
		{"nil plaintext", nil, seal.AAD("key", "dev-1", "KEY-A")},
		{"binary plaintext", bytes.Repeat([]byte{0, 0xff}, 300), seal.AAD("blob")},
		{"empty parts", []byte("x"), seal.AAD("key", "", "")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sealed, err := s.Seal(tc.plaintext, tc.aad)
			if err != nil {
				t.Fatalf("Seal: %v", err)
			}
			got, err := s.Open(sealed, tc.aad)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(got, tc.plaintext) {
				t.Fatalf("Open = %q, want %q", got, tc.plaintext)
			}
		})
	}
}

func TestSealRefusesEmptyAAD(t *testing.T) {
	s := newSealer(t)
	for _, aad := range [][]byte{nil, {}} {
		if _, err := s.Seal([]byte("secret"), aad); err == nil {
			t.Errorf("Seal with aad %#v succeeded, want error", aad)
		}
	}
}

func TestSealIsRandomized(t *testing.T) {
	s := newSealer(t)
	aad := seal.AAD("key", "dev-1", "KEY-A")
	a := mustSeal(t, s, recoveryPassword, aad)
	b := mustSeal(t, s, recoveryPassword, aad)
	if bytes.Equal(a.Ciphertext, b.Ciphertext) || bytes.Equal(a.WrappedKey, b.WrappedKey) {
		t.Fatal("sealing the same value twice gave identical bytes; data keys must be fresh per value")
	}
}

func TestOpenWrongRow(t *testing.T) {
	s := newSealer(t)
	aad := seal.AAD("key", "dev-1", "KEY-A")
	sealed := mustSeal(t, s, recoveryPassword, aad)
	tests := []struct {
		name string
		aad  []byte
	}{
		{"other device", seal.AAD("key", "dev-2", "KEY-A")},
		{"other key id", seal.AAD("key", "dev-1", "KEY-B")},
		{"other purpose", seal.AAD("check", "dev-1", "KEY-A")},
		{"shifted boundary", seal.AAD("key", "dev-1K", "EY-A")},
		{"extra part", seal.AAD("key", "dev-1", "KEY-A", "")},
		{"missing part", seal.AAD("key", "dev-1")},
		{"nil aad", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.Open(sealed, tc.aad); !errors.Is(err, seal.ErrOpen) {
				t.Fatalf("Open with wrong AAD: err = %v, want ErrOpen", err)
			}
			if _, err := s.Rewrap(sealed, tc.aad); !errors.Is(err, seal.ErrOpen) {
				t.Fatalf("Rewrap with wrong AAD: err = %v, want ErrOpen", err)
			}
		})
	}
}

func TestOpenSwappedColumns(t *testing.T) {
	s := newSealer(t)
	aadA := seal.AAD("key", "dev-1", "KEY-A")
	aadB := seal.AAD("key", "dev-1", "KEY-B")
	a := mustSeal(t, s, "secret A", aadA)
	b := mustSeal(t, s, "secret B", aadB)
	a2 := mustSeal(t, s, "secret A2", aadA) // same row as a, different data key
	tests := []struct {
		name   string
		sealed seal.Sealed
		aad    []byte
	}{
		{"B's ciphertext with A's key, A's row", seal.Sealed{Ciphertext: b.Ciphertext, WrappedKey: a.WrappedKey}, aadA},
		{"B's ciphertext with A's key, B's row", seal.Sealed{Ciphertext: b.Ciphertext, WrappedKey: a.WrappedKey}, aadB},
		{"A's ciphertext with B's key, A's row", seal.Sealed{Ciphertext: a.Ciphertext, WrappedKey: b.WrappedKey}, aadA},
		{"A's ciphertext with B's key, B's row", seal.Sealed{Ciphertext: a.Ciphertext, WrappedKey: b.WrappedKey}, aadB},
		{"same row, other value's key", seal.Sealed{Ciphertext: a.Ciphertext, WrappedKey: a2.WrappedKey}, aadA},
		{"fields exchanged", seal.Sealed{Ciphertext: a.WrappedKey, WrappedKey: a.Ciphertext}, aadA},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if pt, err := s.Open(tc.sealed, tc.aad); !errors.Is(err, seal.ErrOpen) {
				t.Fatalf("Open = %q, %v; want ErrOpen", pt, err)
			}
		})
	}
}

// TestOpenHostile checks that malformed input of every kind is reported as
// ErrOpen; a panic fails the test by itself.
func TestOpenHostile(t *testing.T) {
	s := newSealer(t)
	aad := seal.AAD("key", "dev-1", "KEY-A")
	good := mustSeal(t, s, recoveryPassword, aad)

	type hostile struct {
		name   string
		sealed seal.Sealed
	}
	tests := []hostile{
		{"both nil", seal.Sealed{}},
		{"both empty", seal.Sealed{Ciphertext: []byte{}, WrappedKey: []byte{}}},
		{"nil ciphertext", seal.Sealed{WrappedKey: good.WrappedKey}},
		{"nil wrapped key", seal.Sealed{Ciphertext: good.Ciphertext}},
		{"random bytes", seal.Sealed{Ciphertext: randomBytes(t, 88), WrappedKey: randomBytes(t, 160)}},
		{"random wrapped key", seal.Sealed{Ciphertext: good.Ciphertext, WrappedKey: randomBytes(t, len(good.WrappedKey))}},
		{"random ciphertext", seal.Sealed{Ciphertext: randomBytes(t, len(good.Ciphertext)), WrappedKey: good.WrappedKey}},
		{"zero bytes", seal.Sealed{Ciphertext: make([]byte, len(good.Ciphertext)), WrappedKey: make([]byte, len(good.WrappedKey))}},
		{"extended ciphertext", seal.Sealed{Ciphertext: append(bytes.Clone(good.Ciphertext), 0), WrappedKey: good.WrappedKey}},
		{"extended wrapped key", seal.Sealed{Ciphertext: good.Ciphertext, WrappedKey: append(bytes.Clone(good.WrappedKey), 0)}},
	}
	for _, n := range []int{0, 1, 4, 5, 6, 16, 17, 32, 33} {
		if n < len(good.Ciphertext) {
			tests = append(tests, hostile{"ciphertext truncated to " + strconv.Itoa(n), seal.Sealed{Ciphertext: good.Ciphertext[:n], WrappedKey: good.WrappedKey}})
		}
	}
	tests = append(tests, hostile{"ciphertext missing last byte", seal.Sealed{Ciphertext: good.Ciphertext[:len(good.Ciphertext)-1], WrappedKey: good.WrappedKey}})
	for _, n := range []int{0, 1, 2, 3, 6, 10, 32, 64, 100} {
		if n < len(good.WrappedKey) {
			tests = append(tests, hostile{"wrapped key truncated to " + strconv.Itoa(n), seal.Sealed{Ciphertext: good.Ciphertext, WrappedKey: good.WrappedKey[:n]}})
		}
	}
	tests = append(tests, hostile{"wrapped key missing last byte", seal.Sealed{Ciphertext: good.Ciphertext, WrappedKey: good.WrappedKey[:len(good.WrappedKey)-1]}})

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if pt, err := s.Open(tc.sealed, aad); !errors.Is(err, seal.ErrOpen) {
				t.Fatalf("Open = %q, %v; want ErrOpen", pt, err)
			}
		})
	}

	// Every single-bit flip in either column must be caught.
	fields := []struct {
		name string
		get  func(*seal.Sealed) []byte
	}{
		{"ciphertext", func(s *seal.Sealed) []byte { return s.Ciphertext }},
		{"wrapped key", func(s *seal.Sealed) []byte { return s.WrappedKey }},
	}
	for _, f := range fields {
		t.Run("bit flips in "+f.name, func(t *testing.T) {
			n := len(f.get(&good))
			for i := range n * 8 {
				c := seal.Sealed{Ciphertext: bytes.Clone(good.Ciphertext), WrappedKey: bytes.Clone(good.WrappedKey)}
				f.get(&c)[i/8] ^= 1 << (i % 8)
				if pt, err := s.Open(c, aad); !errors.Is(err, seal.ErrOpen) {
					t.Fatalf("bit %d of byte %d flipped: Open = %q, %v; want ErrOpen", i%8, i/8, pt, err)
				}
				if f.name == "wrapped key" {
					if _, err := s.Rewrap(c, aad); !errors.Is(err, seal.ErrOpen) {
						t.Fatalf("bit %d of byte %d flipped: Rewrap err = %v, want ErrOpen", i%8, i/8, err)
					}
				}
			}
		})
	}

	if _, err := s.Open(good, aad); err != nil {
		t.Fatalf("the original value no longer opens; the test mutated shared bytes: %v", err)
	}
}

func FuzzOpen(f *testing.F) {
	s := newSealer(f)
	aad := seal.AAD("key", "dev-1", "KEY-A")
	good := mustSeal(f, s, recoveryPassword, aad)
	f.Add(good.Ciphertext, good.WrappedKey)
	f.Add([]byte{}, []byte{})
	f.Add(good.WrappedKey, good.Ciphertext)
	f.Fuzz(func(t *testing.T, ct, wk []byte) {
		pt, err := s.Open(seal.Sealed{Ciphertext: ct, WrappedKey: wk}, aad)
		if err == nil {
			if !bytes.Equal(ct, good.Ciphertext) || !bytes.Equal(wk, good.WrappedKey) {
				t.Fatalf("forged value opened to %q", pt)
			}
			return
		}
		if !errors.Is(err, seal.ErrOpen) {
			t.Fatalf("err = %v, want ErrOpen", err)
		}
	})
}

func TestOtherMasterKeyCannotOpen(t *testing.T) {
	s1, s2 := newSealer(t), newSealer(t)
	aad := seal.AAD("key", "dev-1", "KEY-A")
	sealed := mustSeal(t, s1, recoveryPassword, aad)
	if pt, err := s2.Open(sealed, aad); !errors.Is(err, seal.ErrOpen) {
		t.Fatalf("Open under another master key = %q, %v; want ErrOpen", pt, err)
	}
	if _, err := s2.Rewrap(sealed, aad); !errors.Is(err, seal.ErrOpen) {
		t.Fatalf("Rewrap under another master key: err = %v, want ErrOpen", err)
	}
}

func TestPlaintextNotInOutput(t *testing.T) {
	s := newSealer(t)
	tests := []struct {
		name      string
		plaintext string
	}{
		{"recovery password", recoveryPassword},
		{"repetitive", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sealed := mustSeal(t, s, tc.plaintext, seal.AAD("key", "dev-1", "KEY-A"))
			// Any 8-byte window would betray the secret, not just all of it.
			for i := 0; i+8 <= len(tc.plaintext); i++ {
				w := []byte(tc.plaintext[i : i+8])
				if bytes.Contains(sealed.Ciphertext, w) || bytes.Contains(sealed.WrappedKey, w) {
					t.Fatalf("plaintext fragment %q found in sealed output", w)
				}
			}
		})
	}
}

func TestCheck(t *testing.T) {
	right := newSealer(t)
	check, err := right.NewCheck()
	if err != nil {
		t.Fatalf("NewCheck: %v", err)
	}
	otherRow, err := right.Seal([]byte("keyward master key check v1"), seal.AAD("key", "dev-1", "KEY-A"))
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	wrongContent, err := right.Seal([]byte("something else"), seal.AAD("check"))
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	tests := []struct {
		name    string
		sealer  *seal.Sealer
		check   seal.Sealed
		wantErr error
	}{
		{"right key", right, check, nil},
		{"wrong key", newSealer(t), check, seal.ErrWrongMasterKey},
		{"empty check", right, seal.Sealed{}, seal.ErrWrongMasterKey},
		{"check sealed for another row", right, otherRow, seal.ErrWrongMasterKey},
		{"unexpected content", right, wrongContent, seal.ErrWrongMasterKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.sealer.VerifyCheck(tc.check)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("VerifyCheck: err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestAAD(t *testing.T) {
	distinct := []struct {
		name string
		a, b []byte
	}{
		{"boundary shift", seal.AAD("key", "ab", "c"), seal.AAD("key", "a", "bc")},
		{"purpose into part", seal.AAD("keyD"), seal.AAD("key", "D")},
		{"empty trailing part", seal.AAD("key", "D"), seal.AAD("key", "D", "")},
		{"part order", seal.AAD("key", "D", "K"), seal.AAD("key", "K", "D")},
		{"purpose", seal.AAD("key", "D", "K"), seal.AAD("check", "D", "K")},
	}
	for _, tc := range distinct {
		t.Run(tc.name, func(t *testing.T) {
			if bytes.Equal(tc.a, tc.b) {
				t.Fatalf("AAD encodings collide: %q", tc.a)
			}
		})
	}
}

// TestAADGolden pins the encoding: stored ciphertexts depend on these exact
// bytes, so this test must never be updated to match a code change.
func TestAADGolden(t *testing.T) {
	tests := []struct {
		name    string
		purpose string
		parts   []string
		want    string
	}{
		{"key row", "key", []string{"D", "K"}, "keyward/v1\x00\x00\x00\x03key\x00\x00\x00\x01D\x00\x00\x00\x01K"},
		{"check", "check", nil, "keyward/v1\x00\x00\x00\x05check"},
		{"empty part", "key", []string{""}, "keyward/v1\x00\x00\x00\x03key\x00\x00\x00\x00"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := seal.AAD(tc.purpose, tc.parts...); string(got) != tc.want {
				t.Fatalf("AAD = %q, want %q", got, tc.want)
			}
		})
	}
}

// rotate returns the master key file bytes of keyJSON with a new AES256-GCM
// key added as primary, and the bytes of a keyset holding only that new key.
func rotate(t *testing.T, keyJSON []byte) (rotated, newOnly []byte) {
	t.Helper()
	h, err := insecurecleartextkeyset.Read(keyset.NewJSONReader(bytes.NewReader(keyJSON)))
	if err != nil {
		t.Fatalf("reading keyset: %v", err)
	}
	oldID := h.KeysetInfo().GetPrimaryKeyId()
	m := keyset.NewManagerFromHandle(h)
	newID, err := m.Add(aead.AES256GCMKeyTemplate())
	if err != nil {
		t.Fatalf("Add: %v", err)
	}
	if err := m.SetPrimary(newID); err != nil {
		t.Fatalf("SetPrimary: %v", err)
	}
	rotated = writeKeyset(t, m)
	if err := m.Delete(oldID); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	return rotated, writeKeyset(t, m)
}

func writeKeyset(t *testing.T, m *keyset.Manager) []byte {
	t.Helper()
	h, err := m.Handle()
	if err != nil {
		t.Fatalf("Handle: %v", err)
	}
	var buf bytes.Buffer
	if err := insecurecleartextkeyset.Write(h, keyset.NewJSONWriter(&buf)); err != nil {
		t.Fatalf("Write: %v", err)
	}
	return buf.Bytes()
}

func TestRewrap(t *testing.T) {
	oldJSON := generate(t)
	rotatedJSON, newOnlyJSON := rotate(t, oldJSON)
	oldS, err := seal.New(oldJSON)
	if err != nil {
		t.Fatal(err)
	}
	rotatedS, err := seal.New(rotatedJSON)
	if err != nil {
		t.Fatal(err)
	}
	newOnlyS, err := seal.New(newOnlyJSON)
	if err != nil {
		t.Fatal(err)
	}

	aad := seal.AAD("key", "dev-1", "KEY-A")
	sealed := mustSeal(t, oldS, recoveryPassword, aad)

	if pt, err := rotatedS.Open(sealed, aad); err != nil || string(pt) != recoveryPassword {
		t.Fatalf("value sealed before rotation: Open = %q, %v", pt, err)
	}
	if _, err := newOnlyS.Open(sealed, aad); !errors.Is(err, seal.ErrOpen) {
		t.Fatalf("new key alone opened a value wrapped under the old key: err = %v", err)
	}

	rewrapped, err := rotatedS.Rewrap(sealed, aad)
	if err != nil {
		t.Fatalf("Rewrap: %v", err)
	}
	if !bytes.Equal(rewrapped.Ciphertext, sealed.Ciphertext) {
		t.Fatal("Rewrap changed Ciphertext")
	}
	if bytes.Equal(rewrapped.WrappedKey, sealed.WrappedKey) {
		t.Fatal("Rewrap left WrappedKey unchanged")
	}

	tests := []struct {
		name    string
		sealer  *seal.Sealer
		aad     []byte
		wantErr error
	}{
		{"new key alone", newOnlyS, aad, nil},
		{"rotated keyset", rotatedS, aad, nil},
		{"old key alone", oldS, aad, seal.ErrOpen},
		{"new key, other row", newOnlyS, seal.AAD("key", "dev-2", "KEY-A"), seal.ErrOpen},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pt, err := tc.sealer.Open(rewrapped, tc.aad)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Open = %q, %v; want %v", pt, err, tc.wantErr)
				}
				return
			}
			if err != nil || string(pt) != recoveryPassword {
				t.Fatalf("Open = %q, %v; want %q", pt, err, recoveryPassword)
			}
		})
	}

	// The check value must survive rotation too, or start-up would fail.
	check, err := oldS.NewCheck()
	if err != nil {
		t.Fatal(err)
	}
	check, err = rotatedS.Rewrap(check, seal.AAD("check"))
	if err != nil {
		t.Fatalf("Rewrap check: %v", err)
	}
	if err := newOnlyS.VerifyCheck(check); err != nil {
		t.Fatalf("VerifyCheck after rotation: %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	s := newSealer(t)
	errs := make(chan error, 16)
	for g := range 16 {
		go func() {
			aad := seal.AAD("key", "dev-"+strconv.Itoa(g), "KEY")
			for range 50 {
				sealed, err := s.Seal([]byte(recoveryPassword), aad)
				if err == nil {
					var pt []byte
					pt, err = s.Open(sealed, aad)
					if err == nil && string(pt) != recoveryPassword {
						err = errors.New("wrong plaintext")
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 16 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func TestZeroSealer(t *testing.T) {
	var s seal.Sealer
	aad := seal.AAD("key", "D", "K")
	if _, err := s.Seal([]byte("x"), aad); err == nil {
		t.Error("Seal on zero Sealer succeeded")
	}
	if _, err := s.Open(seal.Sealed{}, aad); err == nil {
		t.Error("Open on zero Sealer succeeded")
	}
	if _, err := s.Rewrap(seal.Sealed{}, aad); err == nil {
		t.Error("Rewrap on zero Sealer succeeded")
	}
	if err := s.VerifyCheck(seal.Sealed{}); err == nil {
		t.Error("VerifyCheck on zero Sealer succeeded")
	}
}

func BenchmarkSeal(b *testing.B) {
	s := newSealer(b)
	pt := []byte(recoveryPassword)
	aad := seal.AAD("key", "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "{12345678-ABCD-EF01-2345-6789ABCDEF01}")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Seal(pt, aad); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	s := newSealer(b)
	aad := seal.AAD("key", "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "{12345678-ABCD-EF01-2345-6789ABCDEF01}")
	sealed := mustSeal(b, s, recoveryPassword, aad)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Open(sealed, aad); err != nil {
			b.Fatal(err)
		}
	}
	// Stored size matters as much as speed: it is paid on every row.
	b.ReportMetric(float64(len(sealed.Ciphertext)), "ct-bytes")
	b.ReportMetric(float64(len(sealed.WrappedKey)), "wk-bytes")
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}
