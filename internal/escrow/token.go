package escrow

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
)

// TokenKind says what a bearer token is for; it is the token's visible prefix, so that a token
// pasted somewhere it should not be is recognisable (and secret scanners can find it).
type TokenKind string

// The token kinds.
const (
	TokenAPI        TokenKind = "kwt_" // a person's API token, carries the user's role
	TokenDevice     TokenKind = "kwd_" // a device's agent token
	TokenEnrollment TokenKind = "kwe_" // lets a device enroll
)

const (
	tokenIDLen     = 16 // hex digits of an 8-byte random ID
	tokenSecretLen = 43 // base64url (unpadded) of 32 random bytes
)

// Token is a parsed bearer token: a public ID used to find its row, and a secret of which
// only a hash is stored.
type Token struct {
	Kind   TokenKind
	ID     string
	Secret string
}

// String returns the token as given to its holder, shown once.
func (t Token) String() string { return string(t.Kind) + t.ID + "_" + t.Secret }

// SecretHash returns the hash stored for the token. The secret has 256 bits of entropy, so a
// fast hash is enough: nobody can search that space, and a stolen database row gives nothing.
func (t Token) SecretHash() []byte {
	h := sha256.Sum256([]byte(t.Secret))
	return h[:]
}

// Matches reports in constant time whether the token's secret hashes to stored.
func (t Token) Matches(stored []byte) bool {
	return subtle.ConstantTimeCompare(t.SecretHash(), stored) == 1
}

// NewToken returns a new random token of the given kind, reading randomness from r.
func NewToken(kind TokenKind, r io.Reader) (Token, error) {
	var b [8 + 32]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return Token{}, fmt.Errorf("read random bytes: %w", err)
	}
	return Token{Kind: kind, ID: hex.EncodeToString(b[:8]), Secret: base64.RawURLEncoding.EncodeToString(b[8:])}, nil
}

// ParseToken splits a token into its parts. It checks only the shape: whether the token is
// valid is for the store to say. The error never repeats the token.
func ParseToken(s string) (Token, error) {
	bad := Errorf(CodeUnauthorized, "the token is not a Keyward token")
	if len(s) != 4+tokenIDLen+1+tokenSecretLen {
		return Token{}, bad
	}
	kind := TokenKind(s[:4])
	switch kind {
	case TokenAPI, TokenDevice, TokenEnrollment:
	default:
		return Token{}, bad
	}
	id, secret := s[4:4+tokenIDLen], s[4+tokenIDLen+1:]
	if s[4+tokenIDLen] != '_' || strings.Trim(id, "0123456789abcdef") != "" {
		return Token{}, bad
	}
	// Decoding skips CR and LF and ignores spare bits; re-encoding insists on the one form.
	if b, err := base64.RawURLEncoding.DecodeString(secret); err != nil || len(b) != 32 || base64.RawURLEncoding.EncodeToString(b) != secret {
		return Token{}, bad
	}
	return Token{Kind: kind, ID: id, Secret: secret}, nil
}

// ParseTokenID reports whether s has the shape of a token's public ID (as in a path), and
// returns it.
func ParseTokenID(s string) (string, bool) {
	if len(s) != tokenIDLen || strings.Trim(s, "0123456789abcdef") != "" {
		return "", false
	}
	return s, true
}
