package escrow

import (
	"strings"
)

// ParseKeyID returns the canonical form of a key protector ID: the GUID in upper case without
// braces (3F2A9C1B-5D4E-4F60-8A7B-1C2D3E4F5A6B). Windows tools print it with braces and
// cryptsetup in lower case; both are accepted.
func ParseKeyID(s string) (string, error) {
	s = strings.TrimSpace(s)
	if len(s) == 38 && s[0] == '{' && s[37] == '}' {
		s = s[1:37]
	}
	if len(s) != 36 {
		return "", Errorf(CodeInvalid, "keyId: must be a GUID like 3F2A9C1B-5D4E-4F60-8A7B-1C2D3E4F5A6B")
	}
	b := []byte(strings.ToUpper(s))
	for i, c := range b {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return "", Errorf(CodeInvalid, "keyId: must be a GUID like 3F2A9C1B-5D4E-4F60-8A7B-1C2D3E4F5A6B")
			}
		default:
			if !isHex(c) {
				return "", Errorf(CodeInvalid, "keyId: must be a GUID like 3F2A9C1B-5D4E-4F60-8A7B-1C2D3E4F5A6B")
			}
		}
	}
	return string(b), nil
}

// MinKeyIDPrefix is how many characters of a key ID find a key: the recovery screen shows the
// whole ID, and people read out its first eight.
const MinKeyIDPrefix = 8

// ParseKeyIDPrefix returns the canonical form of a key ID prefix of at least MinKeyIDPrefix
// characters, or of a whole key ID.
func ParseKeyIDPrefix(s string) (string, error) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "{")
	s = strings.TrimSuffix(s, "}")
	if len(s) < MinKeyIDPrefix || len(s) > 36 {
		return "", Errorf(CodeInvalid, "keyId: give the whole key ID or at least its first %d characters", MinKeyIDPrefix)
	}
	b := []byte(strings.ToUpper(s))
	for i, c := range b {
		want := isHex(c)
		if i == 8 || i == 13 || i == 18 || i == 23 {
			want = c == '-'
		}
		if !want {
			return "", Errorf(CodeInvalid, "keyId: character %d is not part of a key ID", i+1)
		}
	}
	return string(b), nil
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'A' <= c && c <= 'F' }
