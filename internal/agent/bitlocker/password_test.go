package bitlocker_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/agent/agenttest"
	"github.com/keyward/keyward/internal/agent/bitlocker"
)

func TestParsePassword(t *testing.T) {
	const canonical = "254793-568007-425557-712855-251119-474815-445082-696212"
	for _, in := range []string{
		canonical,
		"  " + canonical + "\r\n",
		strings.ReplaceAll(canonical, "-", ""),
		strings.ReplaceAll(canonical, "-", " "),
		strings.ReplaceAll(canonical, "-", " - "),
	} {
		got, err := bitlocker.ParsePassword(in)
		if err != nil || got != canonical {
			t.Errorf("ParsePassword(%q) = %q, %v", in, got, err)
		}
	}
	// Every real recovery password of the sample images is valid.
	for _, pw := range agenttest.Passwords(t) {
		if got, err := bitlocker.ParsePassword(pw); err != nil || got != pw {
			t.Errorf("sample password rejected: %v", err)
		}
	}
}

func TestParsePasswordRejects(t *testing.T) {
	const canonical = "254793-568007-425557-712855-251119-474815-445082-696212"
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "recovery password must have 8 blocks of 6 digits, got 0"},
		{"seven blocks", canonical[:48], "got 7"},
		{"nine blocks", canonical + "-000000", "got 9"},
		{"five-digit block", strings.Replace(canonical, "568007", "56800", 1), "block 2 has 5 digits, want 6"},
		{"not a multiple of 11", strings.Replace(canonical, "696212", "696213", 1), "block 8 is not a multiple of 11"},
		{"too large", strings.Replace(canonical, "425557", "720896", 1), "block 3 is too large"},
		{"letter", strings.Replace(canonical, "712855", "71285x", 1), "block 4 contains a character that is not a digit"},
		{"full-width digit", strings.Replace(canonical, "251119", "２51119", 1), "block 5 contains a character that is not a digit"},
		{"47 digits in one run", strings.ReplaceAll(canonical, "-", "")[:47], "got 1"},
		{"many blocks", strings.Repeat("000000-", 200), "got more than 99"},
		{"huge block", strings.Repeat("1", 500) + "-000000-000000-000000-000000-000000-000000-000000", "block 1 has more than 99 digits"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := bitlocker.ParsePassword(tt.in)
			var pe *bitlocker.PasswordError
			if !errors.As(err, &pe) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want a PasswordError containing %q", err, tt.want)
			}
			for _, block := range strings.Fields(strings.NewReplacer("-", " ").Replace(tt.in)) {
				if len(block) >= 5 && strings.Contains(err.Error(), block) {
					t.Fatalf("error %q repeats input %q", err, block)
				}
			}
		})
	}
}

func TestGeneratePassword(t *testing.T) {
	// Bytes 00..0f give words 0x0100, 0x0302, ... in little-endian order.
	got, err := bitlocker.GeneratePassword(bytes.NewReader([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}))
	if err != nil || got != "002816-008470-014124-019778-025432-031086-036740-042394" {
		t.Fatalf("GeneratePassword = %q, %v", got, err)
	}
	seen := map[string]bool{}
	for range 200 {
		pw, err := bitlocker.GeneratePassword(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if c, err := bitlocker.ParsePassword(pw); err != nil || c != pw {
			t.Fatalf("generated %q is not canonical: %v", pw, err)
		}
		if seen[pw] {
			t.Fatal("the same password twice")
		}
		seen[pw] = true
	}
	if _, err := bitlocker.GeneratePassword(bytes.NewReader(make([]byte, 15))); err == nil {
		t.Fatal("15 random bytes made a password")
	}
}

func TestFingerprint(t *testing.T) {
	// Computed independently: HMAC-SHA256(base64-decoded key, canonical password), lower-case hex.
	key, err := base64.StdEncoding.DecodeString("AmHKLzX95rD3JcbzJbzktHqfaUEf5/DpBsoVG8bZijs=")
	if err != nil {
		t.Fatal(err)
	}
	got := bitlocker.Fingerprint(key, "254793-568007-425557-712855-251119-474815-445082-696212")
	if got != "1af1536e169b5dd5ad9b54f92313628bfd0f98f694488e6c13e2480090ae7df1" {
		t.Fatalf("Fingerprint = %s", got)
	}
}

func TestCanonicalKeyID(t *testing.T) {
	for in, want := range map[string]string{
		"{8a696888-99a7-4fac-92c7-6cc497ea7bdf}":   "8A696888-99A7-4FAC-92C7-6CC497EA7BDF",
		" 8A696888-99A7-4FAC-92C7-6CC497EA7BDF ":   "8A696888-99A7-4FAC-92C7-6CC497EA7BDF",
		"{5Fxxxx8-7xx0-4xx1-9xx0-76xxxxxxx30}":     "",
		"8A696888-99A7-4FAC-92C7-6CC497EA7BD":      "",
		"8A696888x99A7-4FAC-92C7-6CC497EA7BDF":     "",
		"{8A696888-99A7-4FAC-92C7-6CC497EA7BDF":    "",
		"8A696888-99A7-4FAC-92C7-6CC497EA7BDG":     "",
		"{{8A696888-99A7-4FAC-92C7-6CC497EA7BDF}}": "",
	} {
		got, err := bitlocker.CanonicalKeyID(in)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("CanonicalKeyID(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"a password in a message", "Add-BitLockerKeyProtector : 254793-568007-425557-712855-251119-474815-445082-696212 is bad",
			"Add-BitLockerKeyProtector : [redacted] is bad"},
		{"a password without hyphens", "value 254793568007425557712855251119474815445082696212", "value [redacted]"},
		{"two blocks of one", "part 254793-568007 of it", "part [redacted] of it"},
		{"a recovery key", "key " + strings.Repeat("AB", 32), "key [redacted]"},
		{"codes and GUIDs stay", "HRESULT 0x80310000 (2150694912) on {8A696888-99A7-4FAC-92C7-6CC497EA7BDF}",
			"HRESULT 0x80310000 (2150694912) on {8A696888-99A7-4FAC-92C7-6CC497EA7BDF}"},
	}
	for _, tt := range tests {
		if got := bitlocker.Redact(tt.in); got != tt.want {
			t.Errorf("%s: Redact(%q) = %q, want %q", tt.name, tt.in, got, tt.want)
		}
	}
}
