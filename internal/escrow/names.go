package escrow

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Sign-in names and owner UPNs have one canonical form, used for storage, for lookups and for
// every ownership check: trimmed, lower-case ASCII. The threat is a look-alike name: with
// Unicode case folding, "ſam@example.com" (U+017F, long s) folds to "sam@example.com", so a
// second account under that name would match sam's devices wherever names are compared with
// strings.EqualFold while being a different account everywhere strings.ToLower is used. Refusing
// anything but ASCII makes the two comparisons one.

// maxNameLen bounds sign-in names and UPNs (the UPN limit in Active Directory is 1024; e-mail
// addresses are at most 254).
const maxNameLen = 256

// CanonicalName returns the canonical form of a sign-in name or owner UPN given in field: leading
// and trailing spaces removed, ASCII letters lower-cased. It refuses, with CodeInvalid naming
// the field, an empty name, one longer than 256 bytes, and one with any character outside
// printable ASCII or with a space inside. Callers that allow "no owner" check for "" first.
func CanonicalName(field, s string) (string, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return "", Errorf(CodeInvalid, "%s: required", field)
	case len(s) > maxNameLen:
		return "", Errorf(CodeInvalid, "%s: at most %d characters", field, maxNameLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return "", Errorf(CodeInvalid, "%s: only letters, digits and ASCII punctuation are allowed (no spaces, no accented or look-alike letters)", field)
		}
	}
	return strings.ToLower(s), nil
}

// SameName reports whether two names are the same person's: both canonical forms exist and
// are equal. It is the one comparison of a sign-in name with an owner UPN.
func SameName(a, b string) bool {
	ca, err := CanonicalName("a", a)
	if err != nil {
		return false
	}
	cb, err := CanonicalName("b", b)
	return err == nil && ca == cb
}

// CleanText returns s safe to record in the audit trail when it comes from outside and cannot
// be refused (a request path, a user agent): invalid UTF-8, control characters and format
// characters become \xNN or \u{NNNN} escapes, so a log viewer or terminal shows them instead of
// acting on them.
func CleanText(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			b.WriteString(`\x`)
			b.WriteString(hex2(s[i]))
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r):
			b.WriteString(`\u{`)
			b.WriteString(strings.ToUpper(strconvHex(uint32(r))))
			b.WriteString(`}`)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func hex2(c byte) string {
	const digits = "0123456789ABCDEF"
	return string([]byte{digits[c>>4], digits[c&0xf]})
}

func strconvHex(v uint32) string {
	const digits = "0123456789ABCDEF"
	if v == 0 {
		return "0"
	}
	var buf [8]byte
	i := len(buf)
	for v > 0 {
		i--
		buf[i] = digits[v&0xf]
		v >>= 4
	}
	return string(buf[i:])
}
