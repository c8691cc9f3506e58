package escrow_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/keyward/keyward/internal/escrow"
)

// countingBytes returns n bytes 0, 1, 2, ...: a deterministic source of "randomness".
func countingBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

// knownToken is what NewToken makes of the bytes 0..39: the ID is the hex of the first 8
// bytes, the secret the unpadded base64url of the other 32.
const (
	knownID     = "0001020304050607"
	knownSecret = "CAkKCwwNDg8QERITFBUWFxgZGhscHR4fICEiIyQlJic"
)

func TestTokenRoundTrip(t *testing.T) {
	for _, kind := range []escrow.TokenKind{escrow.TokenAPI, escrow.TokenDevice, escrow.TokenEnrollment} {
		t.Run(string(kind), func(t *testing.T) {
			tok, err := escrow.NewToken(kind, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			s := tok.String()
			if !strings.HasPrefix(s, string(kind)) {
				t.Errorf("token %q does not start with its kind %q", s, kind)
			}
			if len(s) != 64 {
				t.Errorf("len(token) = %d, want 64", len(s))
			}
			got, err := escrow.ParseToken(s)
			if err != nil {
				t.Fatalf("ParseToken(String()): %v", err)
			}
			if got != tok {
				t.Errorf("ParseToken(String()) = %+v, want %+v", got, tok)
			}
			if !got.Matches(tok.SecretHash()) {
				t.Error("parsed token does not match the hash of the token it came from")
			}
		})
	}
}

func TestNewTokenDeterministic(t *testing.T) {
	tests := []struct {
		kind escrow.TokenKind
		want string
	}{
		{escrow.TokenAPI, "kwt_" + knownID + "_" + knownSecret},
		{escrow.TokenDevice, "kwd_" + knownID + "_" + knownSecret},
		{escrow.TokenEnrollment, "kwe_" + knownID + "_" + knownSecret},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind), func(t *testing.T) {
			for range 2 {
				tok, err := escrow.NewToken(tt.kind, bytes.NewReader(countingBytes(40)))
				if err != nil {
					t.Fatal(err)
				}
				if got := tok.String(); got != tt.want {
					t.Errorf("NewToken = %q, want %q", got, tt.want)
				}
				if tok.Kind != tt.kind || tok.ID != knownID || tok.Secret != knownSecret {
					t.Errorf("NewToken parts = %+v", tok)
				}
			}
		})
	}
}

func TestNewTokenRandom(t *testing.T) {
	a, err := escrow.NewToken(escrow.TokenAPI, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := escrow.NewToken(escrow.TokenAPI, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID == b.ID {
		t.Errorf("two tokens share the ID %q", a.ID)
	}
	if a.Secret == b.Secret {
		t.Error("two tokens share a secret")
	}
	if bytes.Equal(a.SecretHash(), b.SecretHash()) {
		t.Error("two tokens share a secret hash")
	}
}

func TestNewTokenReadFailure(t *testing.T) {
	errEntropy := errors.New("entropy source failed")
	tests := []struct {
		name    string
		r       io.Reader
		wantErr error
	}{
		{"reader fails", iotest.ErrReader(errEntropy), errEntropy},
		{"reader fails after some bytes", io.MultiReader(bytes.NewReader(countingBytes(10)), iotest.ErrReader(errEntropy)), errEntropy},
		{"reader ends one byte short", bytes.NewReader(countingBytes(39)), io.ErrUnexpectedEOF},
		{"reader is empty", bytes.NewReader(nil), io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := escrow.NewToken(escrow.TokenDevice, tt.r)
			if err == nil {
				t.Fatalf("NewToken = %q, want an error", tok.String())
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("NewToken error = %v, want it to wrap %v", err, tt.wantErr)
			}
			if tok != (escrow.Token{}) {
				t.Errorf("NewToken returned %+v with its error", tok)
			}
		})
	}
}

func TestTokenMatches(t *testing.T) {
	a, err := escrow.NewToken(escrow.TokenAPI, bytes.NewReader(countingBytes(40)))
	if err != nil {
		t.Fatal(err)
	}
	b, err := escrow.NewToken(escrow.TokenAPI, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sameIDOtherSecret := escrow.Token{Kind: a.Kind, ID: a.ID, Secret: b.Secret}
	tests := []struct {
		name   string
		tok    escrow.Token
		stored []byte
		want   bool
	}{
		{"own hash", a, a.SecretHash(), true},
		{"another token's hash", a, b.SecretHash(), false},
		{"same ID, other secret", sameIDOtherSecret, a.SecretHash(), false},
		{"nil stored hash", a, nil, false},
		{"empty stored hash", a, []byte{}, false},
		{"truncated stored hash", a, a.SecretHash()[:31], false},
		{"stored hash with a byte appended", a, append(a.SecretHash(), 0), false},
		{"the secret itself instead of its hash", a, []byte(a.Secret), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.tok.Matches(tt.stored); got != tt.want {
				t.Errorf("Matches = %v, want %v", got, tt.want)
			}
		})
	}
	if len(a.SecretHash()) != 32 {
		t.Errorf("len(SecretHash()) = %d, want 32 (SHA-256)", len(a.SecretHash()))
	}
	if bytes.Contains(a.SecretHash(), []byte(a.Secret)) {
		t.Error("the hash contains the secret")
	}
}

func TestParseTokenRejects(t *testing.T) {
	valid := "kwt_" + knownID + "_" + knownSecret
	if _, err := escrow.ParseToken(valid); err != nil {
		t.Fatalf("ParseToken(valid): %v", err)
	}
	// at replaces the byte at i of the valid token.
	at := func(i int, c string) string { return valid[:i] + c + valid[i+len(c):] }
	tests := []struct {
		name string
		in   string
	}{
		{name: "empty", in: ""},
		{name: "unknown prefix", in: at(0, "kwx_")},
		{name: "upper-case prefix", in: at(0, "KWT_")},
		{name: "GitHub token prefix", in: at(0, "ghp_")},
		{name: "prefix without underscore", in: at(3, "-")},
		{name: "one character short", in: valid[:63]},
		{name: "one character long", in: valid + "A"},
		{name: "surrounding whitespace", in: " " + valid},
		{name: "Bearer scheme still attached", in: "Bearer " + valid},
		{name: "upper-case hex ID", in: "kwt_" + strings.ToUpper("0a0b0c0d0e0f0a0b") + "_" + knownSecret},
		{name: "non-hex ID", in: at(4, "g")},
		{name: "ID with a hyphen", in: at(10, "-")},
		{name: "hyphen as separator", in: at(20, "-")},
		{name: "dot as separator", in: at(20, ".")},
		{name: "no separator, secret one longer", in: "kwt_" + knownID + knownSecret + "A"},
		{name: "standard base64 plus in secret", in: at(63, "+")},
		{name: "standard base64 slash in secret", in: at(30, "/")},
		{name: "padding in secret", in: at(63, "=")},
		{name: "space in secret", in: at(40, " ")},
		{name: "NUL in secret", in: at(40, "\x00")},
		{name: "non-ASCII in secret", in: at(40, "é")},
		{name: "invalid UTF-8 in secret", in: at(40, "\xff")},
		{name: "newline in secret", in: at(63, "\n")},
		{name: "carriage return in secret", in: at(40, "\r")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := escrow.ParseToken(tt.in)
			if err == nil {
				t.Fatalf("ParseToken(%q) = %+v, want an error", tt.in, tok)
			}
			if tok != (escrow.Token{}) {
				t.Errorf("ParseToken returned %+v with its error", tok)
			}
			if code := escrow.ErrorCode(err); code != escrow.CodeUnauthorized {
				t.Errorf("error code = %q, want %q", code, escrow.CodeUnauthorized)
			}
			msg := err.Error()
			for _, part := range []string{tt.in, knownSecret, knownSecret[:8], knownID} {
				if part != "" && strings.Contains(msg, part) {
					t.Errorf("error %q repeats part of the token (%q)", msg, part)
				}
			}
		})
	}
}

func TestParseTokenParts(t *testing.T) {
	// The secret alphabet includes '_' and '-': the separator is found by position, not by
	// searching, so a secret that starts with '_' still parses.
	secret := "_" + knownSecret[1:]
	tok, err := escrow.ParseToken("kwe_" + knownID + "_" + secret)
	if err != nil {
		t.Fatal(err)
	}
	want := escrow.Token{Kind: escrow.TokenEnrollment, ID: knownID, Secret: secret}
	if tok != want {
		t.Errorf("ParseToken = %+v, want %+v", tok, want)
	}
}
