package escrow_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/keyward/keyward/internal/escrow"
)

// testKeyID is deliberately not the example GUID of the error messages, so that a check for
// an echoed input cannot pass by accident.
const testKeyID = "0A1B2C3D-4E5F-6789-ABCD-EF0123456789"

func TestParseKeyID(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"upper case", testKeyID},
		{"lower case", strings.ToLower(testKeyID)},
		{"mixed case", "0a1B2c3D-4e5F-6789-aBcD-eF0123456789"},
		{"braced upper case, as Windows prints it", "{" + testKeyID + "}"},
		{"braced lower case", "{" + strings.ToLower(testKeyID) + "}"},
		{"surrounding whitespace is trimmed (current behaviour)", " \t" + testKeyID + "\r\n"},
		{"braced with surrounding whitespace", "  {" + testKeyID + "}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := escrow.ParseKeyID(tt.in)
			if err != nil {
				t.Fatalf("ParseKeyID(%q): %v", tt.in, err)
			}
			if got != testKeyID {
				t.Errorf("ParseKeyID(%q) = %q, want %q", tt.in, got, testKeyID)
			}
		})
	}
}

func TestParseKeyIDRejectsHostileInput(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"only whitespace", "   \t\n"},
		{"35 characters", testKeyID[:35]},
		{"37 characters", testKeyID + "0"},
		{"32 hex digits without hyphens", strings.ReplaceAll(testKeyID, "-", "")},
		{"hyphens moved one place left", "0A1B2C3-D4E5F-6789-ABCD-EF0123456789"},
		{"hyphens moved one place right", "0A1B2C3D4-E5F6-789A-BCDE-F0123456789"},
		{"hyphen replaced by underscore", "0A1B2C3D_4E5F-6789-ABCD-EF0123456789"},
		{"hyphen replaced by hex digit, hex digit by hyphen", "0A1B2C3D04E5F-6789-ABCD-EF012345678-"},
		{"non-hex letter G", "0A1B2C3D-4E5F-6789-ABCD-EF012345678G"},
		{"non-hex letter lower-case z", "0a1b2c3d-4e5f-6789-abcd-ef012345678z"},
		{"Cyrillic A look-alike", "0\u04101B2C3D-4E5F-6789-ABCD-EF0123456789"},
		{"Cyrillic A look-alike keeping 36 bytes", "0\u0410B2C3D-4E5F-6789-ABCD-EF0123456789"},
		{"fullwidth digit keeping 36 bytes", "\uff101B2C3-4E5F-6789-ABCD-EF0123456789"},
		{"en dash instead of hyphen keeping 36 bytes", "0A1B2C3D\u20134E5F-6789-ABCD-EF01234567"},
		{"Unicode hyphen instead of hyphen keeping 36 bytes", "0A1B2C3D\u20104E5F-6789-ABCD-EF01234567"},
		{"dotless i that upper-cases to ASCII I", "0A1B2C3D-4E5F-6789-ABCD-EF01234567\u0131"},
		{"long s that upper-cases to ASCII S", "0A1B2C3D-4E5F-6789-ABCD-EF01234567\u017f"},
		{"opening brace only", "{" + testKeyID},
		{"closing brace only", testKeyID + "}"},
		{"braces with a character missing", "{" + testKeyID[:35] + "}"},
		{"double braces", "{{" + testKeyID + "}}"},
		{"square brackets", "[" + testKeyID + "]"},
		{"parentheses", "(" + testKeyID + ")"},
		{"urn prefix", "urn:uuid:" + testKeyID},
		{"embedded NUL instead of a digit", "0A1B2C3D-4E5F-6789-ABCD-EF012345678\x00"},
		{"NUL after a valid ID", testKeyID + "\x00"},
		{"space inside", "0A1B2C3D-4E5F-6789-ABCD-EF012345 789"},
		{"tab inside", "0A1B2C3D-4E5F-6789-ABCD-EF0123\t56789"},
		{"spaces instead of hyphens", "0A1B2C3D 4E5F 6789 ABCD EF0123456789"},
		{"invalid UTF-8", "0A1B2C3D-4E5F-6789-ABCD-EF01234567\xff\xfe"},
		{"SQL injection", "0A1B2C3D' OR '1'='1' ---------------"},
		{"path traversal", "../../../../../../../../etc/passwd.."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := escrow.ParseKeyID(tt.in)
			if err == nil {
				t.Fatalf("ParseKeyID(%q) = %q, want an error", tt.in, got)
			}
			if got != "" {
				t.Errorf("ParseKeyID(%q) returned %q with its error", tt.in, got)
			}
			checkInvalidNoEcho(t, err, tt.in)
		})
	}
}

func TestParseKeyIDPrefix(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"8 characters, the minimum", "0A1B2C3D", "0A1B2C3D"},
		{"8 characters lower case", "0a1b2c3d", "0A1B2C3D"},
		{"with its trailing hyphen", "0A1B2C3D-", "0A1B2C3D-"},
		{"12 characters", "0A1B2C3D-4E5", "0A1B2C3D-4E5"},
		{"up to the second group", "0a1b2c3d-4e5f", "0A1B2C3D-4E5F"},
		{"35 characters", testKeyID[:35], testKeyID[:35]},
		{"whole ID", testKeyID, testKeyID},
		{"whole ID lower case", strings.ToLower(testKeyID), testKeyID},
		{"whole braced ID", "{" + testKeyID + "}", testKeyID},
		{"start of a braced ID (current behaviour)", "{0a1b2c3d", "0A1B2C3D"},
		{"surrounding whitespace is trimmed (current behaviour)", " 0A1B2C3D\n", "0A1B2C3D"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := escrow.ParseKeyIDPrefix(tt.in)
			if err != nil {
				t.Fatalf("ParseKeyIDPrefix(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseKeyIDPrefix(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseKeyIDPrefixRejectsHostileInput(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"7 characters", "0A1B2C3"},
		{"7 characters in braces", "{0A1B2C3}"},
		{"37 characters", testKeyID + "0"},
		{"hex digit where the first hyphen belongs", "0A1B2C3D4"},
		{"hyphen at the wrong position", "0A1B-2C3D"},
		{"hyphen too early in the second group", "0A1B2C3D-4E5-F6789"},
		{"no hyphens, 32 hex digits", strings.ReplaceAll(testKeyID, "-", "")},
		{"non-hex letter", "0A1B2C3G"},
		{"non-hex in a later group", "0A1B2C3D-4E5X"},
		{"space inside", "0A1B 2C3D"},
		{"embedded NUL", "0A1B2C3\x00D"},
		{"Cyrillic look-alike", "0A1B2C3\u0410"},
		{"fullwidth digits", "\uff10\uff21\uff11\uff22"},
		{"SQL wildcard", "0A1B2C3%"},
		{"SQL LIKE underscore", "0A1B2C3_"},
		{"invalid UTF-8", "0A1B2C3D\xff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := escrow.ParseKeyIDPrefix(tt.in)
			if err == nil {
				t.Fatalf("ParseKeyIDPrefix(%q) = %q, want an error", tt.in, got)
			}
			if got != "" {
				t.Errorf("ParseKeyIDPrefix(%q) returned %q with its error", tt.in, got)
			}
			checkInvalidNoEcho(t, err, tt.in)
		})
	}
}

// checkInvalidNoEcho checks that err is an invalid-request error whose text does not repeat
// the input: the message goes back to the caller and into logs.
func checkInvalidNoEcho(t *testing.T, err error, in string) {
	t.Helper()
	if code := escrow.ErrorCode(err); code != escrow.CodeInvalid {
		t.Errorf("error code = %q, want %q", code, escrow.CodeInvalid)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "keyId: ") {
		t.Errorf("error %q does not name the keyId field", msg)
	}
	if s := strings.TrimSpace(in); len(s) >= 4 && strings.Contains(err.Error(), s) {
		t.Errorf("error %q repeats the input %q", err.Error(), in)
	}
	if strings.ContainsAny(err.Error(), "\x00\t\n") || !utf8.ValidString(err.Error()) {
		t.Errorf("error %q carries control bytes from the input", err.Error())
	}
}
