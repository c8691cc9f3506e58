package recovery_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/keyward/keyward/internal/bitlockertest"
	"github.com/keyward/keyward/internal/recovery"
)

const (
	readmePath         = "README.md"
	windowsOutputsPath = "windows-outputs.md"
	recoveryKeyMessage = "recovery key must be 64 hex digits or base64 of 32 bytes"
)

var passwordPattern = regexp.MustCompile(`\b\d{6}(-\d{6}){7}\b`)

// extractPasswords returns the distinct recovery passwords in a file, failing (not skipping)
// when the file is missing: the real-world vectors are the point of these tests.
func extractPasswords(tb testing.TB, path string) []string {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(bitlockertest.Dir(tb), path))
	if err != nil {
		tb.Fatalf("test data is required: %v", err)
	}
	var out []string
	for _, m := range passwordPattern.FindAllString(string(data), -1) {
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}

// realPasswords are the passwords from real BitLocker volumes (README) plus the three real
// Windows outputs that pass the checksum rule.
func realPasswords(tb testing.TB) []string {
	tb.Helper()
	pws := extractPasswords(tb, readmePath)
	if len(pws) < 20 {
		tb.Fatalf("%s: found %d distinct recovery passwords, want at least 20", readmePath, len(pws))
	}
	fromWindows := extractPasswords(tb, windowsOutputsPath)
	for _, prefix := range []string{"254793-", "463881-", "271733-"} {
		i := slices.IndexFunc(fromWindows, func(p string) bool { return strings.HasPrefix(p, prefix) })
		if i < 0 {
			tb.Fatalf("%s: no recovery password starting with %s", windowsOutputsPath, prefix)
		}
		if !slices.Contains(pws, fromWindows[i]) {
			pws = append(pws, fromWindows[i])
		}
	}
	return pws
}

var sixDigits = regexp.MustCompile(`[0-9]{6}`)

// assertNoKeyMaterial checks that an error message could not have leaked the input: it holds
// no six consecutive digits at all, so in particular no six-digit window of the input.
func assertNoKeyMaterial(tb testing.TB, input, msg string) {
	tb.Helper()
	if sixDigits.MatchString(msg) {
		tb.Errorf("error message %q contains a run of six digits", msg)
	}
	for i := 0; i+6 <= len(input); i++ {
		w := input[i : i+6]
		if isASCIIDigits(w) && strings.Contains(msg, w) {
			tb.Errorf("error message %q contains input digits %q", msg, w)
			return
		}
	}
}

// assertNoInputTokens also catches non-digit material such as a redacted "1xxx8" block. It is
// only for hand-picked inputs: a fuzzed token like "digits" would legitimately match.
func assertNoInputTokens(tb testing.TB, input, msg string) {
	tb.Helper()
	for _, tok := range strings.FieldsFunc(input, func(r rune) bool { return r == '-' || r == ' ' }) {
		if len(tok) >= 5 && strings.Contains(msg, tok) {
			tb.Errorf("error message %q contains input token %q", msg, tok)
			return
		}
	}
}

func isASCIIDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func TestParsePasswordReal(t *testing.T) {
	for _, pw := range realPasswords(t) {
		forms := map[string]string{
			"canonical":       pw,
			"no separators":   strings.ReplaceAll(pw, "-", ""),
			"spaces":          strings.ReplaceAll(pw, "-", " "),
			"padded":          " \t" + pw + "\r\n",
			"mixed":           strings.Replace(strings.Replace(pw, "-", " - ", 2), "-", " ", 2),
			"padded straight": "\n" + strings.ReplaceAll(pw, "-", "") + " ",
		}
		for name, in := range forms {
			t.Run(pw[:6]+"/"+name, func(t *testing.T) {
				got, err := recovery.ParsePassword(in)
				if err != nil {
					t.Fatalf("ParsePassword: %v", err)
				}
				if got != pw {
					t.Errorf("ParsePassword = %q, want %q", got, pw)
				}
				if _, err := recovery.PasswordKey(in); err != nil {
					t.Errorf("PasswordKey: %v", err)
				}
			})
		}
	}
}

func TestParsePasswordInvalid(t *testing.T) {
	const valid = "482548-408683-386023-032725-083754-344718-228228-361845"
	blocks := strings.Split(valid, "-")
	withBlock := func(pos int, v string) string {
		b := slices.Clone(blocks)
		b[pos-1] = v
		return strings.Join(b, "-")
	}

	type tc struct {
		name      string
		in        string
		wantBlock int
		wantMsg   string // checked when not empty
	}
	cases := []tc{
		{name: "empty", in: "", wantMsg: "recovery password must have 8 blocks of 6 digits, got 0 blocks"},
		{name: "whitespace only", in: " \t\n ", wantMsg: "recovery password must have 8 blocks of 6 digits, got 0 blocks"},
		{name: "only hyphens", in: "-------", wantMsg: "recovery password must have 8 blocks of 6 digits, got 0 blocks"},
		{name: "7 blocks", in: strings.Join(blocks[:7], "-"), wantMsg: "recovery password must have 8 blocks of 6 digits, got 7 blocks"},
		{name: "9 blocks", in: valid + "-000000", wantMsg: "recovery password must have 8 blocks of 6 digits, got 9 blocks"},
		{name: "one block", in: blocks[0], wantMsg: "recovery password must have 8 blocks of 6 digits, got 1 block"},
		{name: "47 digits straight", in: strings.ReplaceAll(valid, "-", "")[1:], wantMsg: "recovery password must have 8 blocks of 6 digits, got 1 block"},
		{name: "49 digits straight", in: strings.ReplaceAll(valid, "-", "") + "0", wantMsg: "recovery password must have 8 blocks of 6 digits, got 1 block"},
		{name: "5-digit block", in: withBlock(2, "40868"), wantBlock: 2, wantMsg: "block 2 has 5 digits, want 6"},
		{name: "7-digit block", in: withBlock(6, "3447180"), wantBlock: 6, wantMsg: "block 6 has 7 digits, want 6"},
		{name: "letter", in: withBlock(4, "03272O"), wantBlock: 4, wantMsg: "block 4 contains a character that is not a digit"},
		{name: "letter in straight form", in: strings.ReplaceAll(withBlock(7, "2282x8"), "-", ""), wantBlock: 7, wantMsg: "block 7 contains a character that is not a digit"},
		{name: "tab separator", in: strings.ReplaceAll(valid, "-", "\t"), wantMsg: "recovery password must have 8 blocks of 6 digits, got 1 block"},
		{name: "720896 (65536*11)", in: withBlock(5, "720896"), wantBlock: 5, wantMsg: "block 5 is too large: block/11 must be below 65536"},
		{name: "720907 (65537*11)", in: withBlock(8, "720907"), wantBlock: 8, wantMsg: "block 8 is too large: block/11 must be below 65536"},
		{name: "999999", in: withBlock(1, "999999"), wantBlock: 1},
		{
			name:      "Microsoft docs counterexample",
			in:        "393943-22222-281721-555554-577984-77777-194700-99999",
			wantBlock: 2,
			wantMsg:   "block 2 has 5 digits, want 6",
		},
		{
			name:      "redacted paste",
			in:        "1xxx8-2xxx2-3xxx8-1xxx6-0xxxx0-3xxx2-0xxx1-6xxx5",
			wantBlock: 1,
			wantMsg:   "block 1 contains a character that is not a digit",
		},
		{name: "Arabic-Indic digit", in: withBlock(3, "38602٣"), wantBlock: 3, wantMsg: "block 3 contains a character that is not a digit"},
		{name: "all Arabic-Indic digits", in: strings.Repeat("٠٠٠٠٠٠-", 7) + "٠٠٠٠٠٠", wantBlock: 1},
		{name: "full-width digits straight", in: strings.Repeat("０", 48), wantMsg: "recovery password must have 8 blocks of 6 digits, got 1 block"},
		{name: "NUL byte", in: withBlock(8, "36184\x00"), wantBlock: 8},
		{name: "invalid UTF-8", in: withBlock(2, "\xff\xfe\xfd\xfc\xfb\xfa"), wantBlock: 2},
		{name: "plus sign", in: withBlock(3, "+38602"), wantBlock: 3},
		{name: "very long many blocks", in: strings.Repeat("123456-", 200_000), wantMsg: "recovery password must have 8 blocks of 6 digits, got more than 99 blocks"},
		{name: "very long straight", in: strings.Repeat("1234567890", 100_000), wantMsg: "recovery password must have 8 blocks of 6 digits, got 1 block"},
		{name: "very long block", in: withBlock(4, strings.Repeat("9", 1_000_000)), wantBlock: 4, wantMsg: "block 4 has more than 99 digits, want 6"},
		{name: "long block", in: withBlock(4, strings.Repeat("9", 60)), wantBlock: 4, wantMsg: "block 4 has 60 digits, want 6"},
	}
	// A non-multiple of 11 at each position; 1 added to a valid block never is one.
	for pos := 1; pos <= 8; pos++ {
		v, _ := strconv.Atoi(blocks[pos-1])
		cases = append(cases, tc{
			name:      "not multiple of 11 at block " + strconv.Itoa(pos),
			in:        withBlock(pos, strconv.Itoa(v + 1 + 1_000_000)[1:]),
			wantBlock: pos,
			wantMsg:   "block " + strconv.Itoa(pos) + " is not a multiple of 11",
		})
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := recovery.ParsePassword(c.in)
			if err == nil {
				t.Fatalf("ParsePassword succeeded with %q", got)
			}
			if got != "" {
				t.Errorf("ParsePassword returned %q along with an error", got)
			}
			var pe *recovery.PasswordError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T is not a *PasswordError", err)
			}
			if pe.Block != c.wantBlock {
				t.Errorf("PasswordError.Block = %d, want %d (%v)", pe.Block, c.wantBlock, err)
			}
			msg := err.Error()
			if c.wantMsg != "" && msg != c.wantMsg {
				t.Errorf("error = %q, want %q", msg, c.wantMsg)
			}
			if msg == "" || msg[0] < 'a' || msg[0] > 'z' || strings.HasSuffix(msg, ".") {
				t.Errorf("error %q should start lower-case and have no trailing period", msg)
			}
			assertNoKeyMaterial(t, c.in, msg)
			assertNoInputTokens(t, c.in, msg)

			_, kerr := recovery.PasswordKey(c.in)
			if kerr == nil || kerr.Error() != msg {
				t.Errorf("PasswordKey error = %v, want %q", kerr, msg)
			}
		})
	}
}

func TestParsePasswordBoundaries(t *testing.T) {
	for _, c := range []struct{ name, in, want string }{
		{"all zero", "000000 000000 000000 000000 000000 000000 000000 000000", "000000-000000-000000-000000-000000-000000-000000-000000"},
		{"largest block", "720885-720885-720885-720885-720885-720885-720885-720885", "720885-720885-720885-720885-720885-720885-720885-720885"},
		{"separator runs", "000011 - 000022--000033  000044 -- 000055-000066-000077-000088", "000011-000022-000033-000044-000055-000066-000077-000088"},
		{"leading and trailing separators", "-000011-000022-000033-000044-000055-000066-000077-000088-", "000011-000022-000033-000044-000055-000066-000077-000088"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := recovery.ParsePassword(c.in)
			if err != nil || got != c.want {
				t.Fatalf("ParsePassword = %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

// referenceKey computes the key behind a canonical password independently of the package.
func referenceKey(tb testing.TB, pw string) [16]byte {
	tb.Helper()
	var key [16]byte
	for i, b := range strings.Split(pw, "-") {
		v, err := strconv.Atoi(b)
		if err != nil || v%11 != 0 {
			tb.Fatalf("bad reference block %d", i+1)
		}
		binary.LittleEndian.PutUint16(key[2*i:], uint16(v/11))
	}
	return key
}

func TestPasswordKey(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want [16]byte
	}{
		{"zero", "000000-000000-000000-000000-000000-000000-000000-000000", [16]byte{}},
		{"all ones", "720885-720885-720885-720885-720885-720885-720885-720885", [16]byte{
			0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		}},
		// words 4660, 65535, 0, 1, 256, 43981, 22136, 48879 (0x1234 0xffff 0 1 0x100 0xabcd 0x5678 0xbeef)
		{"little endian", "051260 720885 000000 000011 002816 483791 243496 537669", [16]byte{
			0x34, 0x12, 0xff, 0xff, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0xcd, 0xab, 0x78, 0x56, 0xef, 0xbe,
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := recovery.PasswordKey(c.in)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("PasswordKey = %x, want %x", got, c.want)
			}
		})
	}
	for _, pw := range realPasswords(t) {
		t.Run("real "+pw[:6], func(t *testing.T) {
			want := referenceKey(t, pw)
			for _, in := range []string{pw, strings.ReplaceAll(pw, "-", ""), strings.ReplaceAll(pw, "-", " ")} {
				got, err := recovery.PasswordKey(in)
				if err != nil {
					t.Fatal(err)
				}
				if got != want {
					t.Errorf("PasswordKey = %x, want %x", got, want)
				}
			}
		})
	}
}

func TestGeneratePassword(t *testing.T) {
	fixed := []struct {
		name string
		in   []byte
		want string
	}{
		// bytes 00..0f: words 0x0100, 0x0302, ... -> 256*11, 770*11, ...
		{"counting", []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, "002816-008470-014124-019778-025432-031086-036740-042394"},
		{"zero", make([]byte, 16), "000000-000000-000000-000000-000000-000000-000000-000000"},
		{"ones", bytes.Repeat([]byte{0xff}, 16), "720885-720885-720885-720885-720885-720885-720885-720885"},
		{"little endian", []byte{0x34, 0x12, 0xff, 0xff, 0, 0, 1, 0, 0, 1, 0xcd, 0xab, 0x78, 0x56, 0xef, 0xbe}, "051260-720885-000000-000011-002816-483791-243496-537669"},
	}
	for _, c := range fixed {
		t.Run(c.name, func(t *testing.T) {
			// Extra bytes after the 16 must be left alone.
			got, err := recovery.GeneratePassword(bytes.NewReader(append(slices.Clone(c.in), 0xaa, 0xbb)))
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("GeneratePassword = %q, want %q", got, c.want)
			}
			key, err := recovery.PasswordKey(got)
			if err != nil || !bytes.Equal(key[:], c.in) {
				t.Errorf("PasswordKey(generated) = %x, %v; want %x", key, err, c.in)
			}
		})
	}

	t.Run("reader error", func(t *testing.T) {
		boom := errors.New("entropy source failed")
		if _, err := recovery.GeneratePassword(iotest.ErrReader(boom)); !errors.Is(err, boom) {
			t.Errorf("error = %v, want one wrapping %v", err, boom)
		}
	})
	t.Run("short reader", func(t *testing.T) {
		if _, err := recovery.GeneratePassword(bytes.NewReader(make([]byte, 15))); err == nil {
			t.Error("GeneratePassword succeeded with 15 random bytes")
		}
	})
	t.Run("one byte at a time", func(t *testing.T) {
		got, err := recovery.GeneratePassword(iotest.OneByteReader(bytes.NewReader(fixed[0].in)))
		if err != nil || got != fixed[0].want {
			t.Errorf("GeneratePassword = %q, %v; want %q", got, err, fixed[0].want)
		}
	})

	t.Run("crypto/rand", func(t *testing.T) {
		const n = 2000
		seen := make(map[string]bool, n)
		for range n {
			pw, err := recovery.GeneratePassword(rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := recovery.ParsePassword(pw); err != nil || got != pw {
				t.Fatalf("generated password does not parse to itself: %v", err)
			}
			if seen[pw] {
				t.Fatal("duplicate generated password")
			}
			seen[pw] = true
		}
	})
}

func TestParseRecoveryKey(t *testing.T) {
	var key [32]byte
	for i := range key {
		key[i] = byte(i*0x3b + 0xf8)
	}
	upper := strings.ToUpper(hex.EncodeToString(key[:]))
	std := base64.StdEncoding.EncodeToString(key[:])
	if !strings.Contains(std, "+") {
		t.Fatal("test key should exercise the alphabets' differences")
	}
	groups := func(s string, n int, sep string) string {
		var parts []string
		for i := 0; i < len(s); i += n {
			parts = append(parts, s[i:i+n])
		}
		return strings.Join(parts, sep)
	}

	valid := []struct{ name, in string }{
		{"hex upper", upper},
		{"hex lower", strings.ToLower(upper)},
		{"hex mixed case", strings.ToLower(upper[:32]) + upper[32:]},
		{"hex padded", "\t " + upper + "\r\n"},
		{"hex groups of 8 with hyphens", groups(upper, 8, "-")},
		{"hex groups of 4 with spaces", groups(upper, 4, " ")},
		{"base64 std", std},
		{"base64 std padded", "  " + std + "\n"},
		{"base64 raw std", base64.RawStdEncoding.EncodeToString(key[:])},
		{"base64 url", base64.URLEncoding.EncodeToString(key[:])},
		{"base64 raw url", base64.RawURLEncoding.EncodeToString(key[:])},
	}
	for _, c := range valid {
		t.Run(c.name, func(t *testing.T) {
			got, err := recovery.ParseRecoveryKey(c.in)
			if err != nil {
				t.Fatalf("ParseRecoveryKey: %v", err)
			}
			if got != key {
				t.Errorf("ParseRecoveryKey = %x, want %x", got, key)
			}
			if s, err := recovery.CanonicalRecoveryKey(c.in); err != nil || s != upper {
				t.Errorf("CanonicalRecoveryKey = %q, %v; want %q", s, err, upper)
			}
		})
	}

	t.Run("format", func(t *testing.T) {
		if got := recovery.FormatRecoveryKey(key); got != upper {
			t.Errorf("FormatRecoveryKey = %q, want %q", got, upper)
		}
		if got, want := recovery.FormatRecoveryKey([32]byte{}), strings.Repeat("0", 64); got != want {
			t.Errorf("FormatRecoveryKey(zero) = %q, want %q", got, want)
		}
	})

	invalid := []struct{ name, in string }{
		{"empty", ""},
		{"whitespace", "  \n"},
		{"hex 63 digits", upper[:63]},
		{"hex 65 digits", upper + "A"},
		{"hex 62 digits", upper[:62]},
		{"hex 66 digits", upper + "AB"},
		{"non-hex", upper[:63] + "G"},
		{"hex with unicode", upper[:62] + "٣"},
		{"hex with 0x prefix", "0x" + upper},
		{"hex with colons", groups(upper, 2, ":")},
		{"base64 31 bytes", base64.StdEncoding.EncodeToString(key[:31])},
		{"base64 33 bytes", base64.StdEncoding.EncodeToString(append(key[:], 0))},
		{"base64 raw 31 bytes", base64.RawStdEncoding.EncodeToString(key[:31])},
		{"base64 raw 33 bytes", base64.RawStdEncoding.EncodeToString(append(key[:], 0))},
		{"base64 16 bytes", base64.StdEncoding.EncodeToString(key[:16])},
		{"base64 with line break", std[:20] + "\n" + std[20:43]},
		{"base64 non-zero trailing bits", std[:42] + "1="},
		{"base64 bad character", "*" + std[1:]},
		{"recovery password", "482548-408683-386023-032725-083754-344718-228228-361845"},
		{"very long", strings.Repeat(upper, 10_000)},
	}
	for _, c := range invalid {
		t.Run(c.name, func(t *testing.T) {
			got, err := recovery.ParseRecoveryKey(c.in)
			if err == nil {
				t.Fatalf("ParseRecoveryKey succeeded with %x", got)
			}
			if got != [32]byte{} {
				t.Error("ParseRecoveryKey returned key bytes along with an error")
			}
			if err.Error() != recoveryKeyMessage {
				t.Errorf("error = %q, want %q", err, recoveryKeyMessage)
			}
			if s, err := recovery.CanonicalRecoveryKey(c.in); err == nil || s != "" {
				t.Errorf("CanonicalRecoveryKey = %q, %v; want an error", s, err)
			}
		})
	}
}

func TestParsePasswordAllocations(t *testing.T) {
	const pw = "482548-408683-386023-032725-083754-344718-228228-361845"
	for _, c := range []struct {
		name string
		in   string
		max  float64
	}{
		{"canonical", pw, 0},
		{"no separators", strings.ReplaceAll(pw, "-", ""), 1},
		{"spaces", strings.ReplaceAll(pw, "-", " "), 1},
	} {
		if n := testing.AllocsPerRun(100, func() { _, _ = recovery.ParsePassword(c.in) }); n > c.max {
			t.Errorf("%s: ParsePassword allocates %v times, want at most %v", c.name, n, c.max)
		}
	}
}

func FuzzParsePassword(f *testing.F) {
	for _, pw := range realPasswords(f) {
		f.Add(pw)
		f.Add(strings.ReplaceAll(pw, "-", ""))
		f.Add(strings.ReplaceAll(pw, "-", " "))
	}
	for _, s := range []string{
		"",
		"-",
		"393943-22222-281721-555554-577984-77777-194700-99999",
		"1xxx8-2xxx2-3xxx8-1xxx6-0xxxx0-3xxx2-0xxx1-6xxx5",
		"720896-000000-000000-000000-000000-000000-000000-000000",
		"000000-000000-000000-000000-000000-000000-000000-720907",
		"482548-408683-386023-03272٣-083754-344718-228228-361845",
		"482548 - 408683 - 386023 - 032725 - 083754 - 344718 - 228228 - 361845",
		"482548-408683-386023-032725-083754-344718-228228",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := recovery.ParsePassword(s)
		if err != nil {
			var pe *recovery.PasswordError
			if !errors.As(err, &pe) || pe.Block < 0 || pe.Block > 8 {
				t.Fatalf("error %v is not a *PasswordError with Block in 0..8", err)
			}
			assertNoKeyMaterial(t, s, err.Error())
			return
		}
		if len(got) != 55 {
			t.Fatalf("ParsePassword returned %d characters, want 55", len(got))
		}
		again, err := recovery.ParsePassword(got)
		if err != nil || again != got {
			t.Fatalf("canonical form does not re-parse to itself: %v", err)
		}
		key, err := recovery.PasswordKey(s)
		if err != nil {
			t.Fatalf("PasswordKey failed where ParsePassword succeeded: %v", err)
		}
		if key != referenceKey(t, got) {
			t.Fatal("PasswordKey disagrees with the reference computation")
		}
		// The key is the password's 16 random bytes, so generating from it must give it back.
		if gen, err := recovery.GeneratePassword(bytes.NewReader(key[:])); err != nil || gen != got {
			t.Fatalf("GeneratePassword(PasswordKey(pw)) != pw: %v", err)
		}
	})
}

func FuzzParseRecoveryKey(f *testing.F) {
	var key [32]byte
	for i := range key {
		key[i] = byte(i*0x3b + 0xf8)
	}
	for _, s := range []string{
		strings.ToUpper(hex.EncodeToString(key[:])),
		hex.EncodeToString(key[:]),
		base64.StdEncoding.EncodeToString(key[:]),
		base64.RawURLEncoding.EncodeToString(key[:]),
		base64.StdEncoding.EncodeToString(key[:31]),
		hex.EncodeToString(key[:31]) + "a",
		"",
		"482548-408683-386023-032725-083754-344718-228228-361845",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := recovery.ParseRecoveryKey(s)
		if err != nil {
			if err.Error() != recoveryKeyMessage {
				t.Fatalf("unexpected error message %q", err)
			}
			return
		}
		formatted := recovery.FormatRecoveryKey(k)
		if len(formatted) != 64 || strings.ToUpper(formatted) != formatted {
			t.Fatalf("FormatRecoveryKey = %q, want 64 upper-case hex digits", formatted)
		}
		if dec, err := hex.DecodeString(formatted); err != nil || !bytes.Equal(dec, k[:]) {
			t.Fatalf("FormatRecoveryKey is not the hex of the key: %v", err)
		}
		back, err := recovery.ParseRecoveryKey(formatted)
		if err != nil || back != k {
			t.Fatalf("formatted key does not round-trip: %v", err)
		}
		if c, err := recovery.CanonicalRecoveryKey(s); err != nil || c != formatted {
			t.Fatalf("CanonicalRecoveryKey = %q, %v; want %q", c, err, formatted)
		}
	})
}

func BenchmarkParsePassword(b *testing.B) {
	const pw = "482548-408683-386023-032725-083754-344718-228228-361845"
	for _, c := range []struct{ name, in string }{
		{"canonical", pw},
		{"no separators", strings.ReplaceAll(pw, "-", "")},
		{"spaces", strings.ReplaceAll(pw, "-", " ")},
		{"invalid", "393943-22222-281721-555554-577984-77777-194700-99999"},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = recovery.ParsePassword(c.in)
			}
		})
	}
}
