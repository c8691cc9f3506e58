package escrow_test

import (
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/escrow"
)

func TestCanonicalName(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"lower-cased and trimmed", "  Alice@Example.COM ", "alice@example.com"},
		{"plain", "sam@example.com", "sam@example.com"},
		{"down-level style", "corp\\alice", "corp\\alice"},
	} {
		got, err := escrow.CanonicalName("email", tc.in)
		if err != nil || got != tc.want {
			t.Errorf("%s: CanonicalName(%q) = %q, %v; want %q", tc.name, tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ name, in string }{
		{"empty", "   "},
		{"long s look-alike", "\u017fam@example.com"},
		{"kelvin sign look-alike", "\u212aeith@example.com"},
		{"cyrillic a", "\u0430lice@example.com"},
		{"space inside", "alice smith@example.com"},
		{"newline", "alice@exa\nmple.com"},
		{"nul", "alice\x00@example.com"},
		{"right-to-left override", "alice\u202e@example.com"},
		{"too long", strings.Repeat("a", 257)},
	} {
		_, err := escrow.CanonicalName("ownerUpn", tc.in)
		if escrow.ErrorCode(err) != escrow.CodeInvalid || !strings.HasPrefix(escrow.ErrorMessage(err), "ownerUpn: ") {
			t.Errorf("%s: CanonicalName(%q) error = %v; want invalid_request naming ownerUpn", tc.name, tc.in, err)
		}
	}
}

func TestSameName(t *testing.T) {
	if !escrow.SameName("Sam@Example.com", "sam@example.com") {
		t.Error("names differing only in ASCII case must be the same person")
	}
	for _, other := range []string{"\u017fam@example.com", "", "sam@example.co"} {
		if escrow.SameName(other, "sam@example.com") {
			t.Errorf("SameName(%q, sam@example.com) = true", other)
		}
	}
}

func TestCheckTextRefusesInvisibleCharacters(t *testing.T) {
	for _, ok := range []string{"", "LT-0042", "Forgotten PIN", "Zoë's laptop", "東京-01"} {
		if err := escrow.CheckText("hostname", ok, false, 256); err != nil {
			t.Errorf("CheckText(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"LT\u202e2400", "LT\u200b0042", "a\nb", "a\tb", "\ufeffLT", "\x1b[31m", "\xff"} {
		err := escrow.CheckText("hostname", bad, false, 256)
		if escrow.ErrorCode(err) != escrow.CodeInvalid || !strings.HasPrefix(escrow.ErrorMessage(err), "hostname: ") {
			t.Errorf("CheckText(%q) = %v; want invalid_request naming hostname", bad, err)
		}
	}
}

func TestCleanText(t *testing.T) {
	for in, want := range map[string]string{
		"/api/devices/x":           "/api/devices/x",
		"/api/devices/x\n\x1b[31m": `/api/devices/x\u{A}\u{1B}[31m`,
		"LT\u202e2400":             `LT\u{202E}2400`,
		"bad\xffbyte":              `bad\xFFbyte`,
		"Zoë":                      "Zoë",
	} {
		if got := escrow.CleanText(in); got != want {
			t.Errorf("CleanText(%q) = %q, want %q", in, got, want)
		}
	}
}
