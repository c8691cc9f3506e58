// Package recovery parses, validates, generates and formats BitLocker recovery passwords and
// recovery keys.
//
// Everything this package is handed is key material. Its errors therefore describe what is
// wrong by position and count only and never repeat any part of the input, because callers
// put them into HTTP responses and logs.
package recovery

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

const (
	blocks      = 8
	blockDigits = 6
	// canonicalLen is 8 blocks of 6 digits and the 7 hyphens between them.
	canonicalLen = blocks*blockDigits + blocks - 1
	// blockLimit is the first block value whose quotient by 11 no longer fits 16 bits.
	blockLimit = 65536 * 11
	// maxReportedCount keeps the counts in error messages short: a count with six digits
	// could coincide with six digits of the input.
	maxReportedCount = 99
)

// PasswordError reports why a recovery password was rejected. It never holds any part of the
// password itself.
type PasswordError struct {
	// Block is the 1-based position of the offending block, or 0 when the problem is not
	// about a single block (for example the wrong number of blocks).
	Block int
	// Problem describes what is wrong. When Block is not 0 it is the rest of the sentence
	// after "block N", e.g. "is not a multiple of 11".
	Problem string
}

func (e *PasswordError) Error() string {
	if e.Block == 0 {
		return e.Problem
	}
	return "block " + strconv.Itoa(e.Block) + " " + e.Problem
}

// errRecoveryKey is deliberately the only recovery-key error: saying which decoding failed
// where would hint at the shape of the input.
var errRecoveryKey = errors.New("recovery key must be 64 hex digits or base64 of 32 bytes")

// GeneratePassword returns a new recovery password in canonical form using random bytes from
// r (pass crypto/rand.Reader in production). Each of the 8 words is a full 16-bit value from
// r, so every block is uniform over its 65536 valid values without rejection sampling.
func GeneratePassword(r io.Reader) (string, error) {
	var key [16]byte
	if _, err := io.ReadFull(r, key[:]); err != nil {
		return "", fmt.Errorf("generating recovery password: %w", err)
	}
	var words [blocks]uint16
	for i := range words {
		words[i] = binary.LittleEndian.Uint16(key[2*i:])
	}
	return formatWords(&words), nil
}

// ParsePassword accepts a recovery password with or without separators and returns it in the
// canonical "123456-...-123456" form. Blocks may be separated by any run of '-' and ' '
// characters, or the 48 digits may be given without separators; surrounding whitespace is
// ignored. Every block must be a multiple of 11 below 720896 (65536*11).
func ParsePassword(s string) (string, error) {
	t := strings.TrimSpace(s)
	words, err := parseWords(t)
	if err != nil {
		return "", err
	}
	// A validated input holds exactly 48 digits, so 55 bytes with hyphens at the 7 canonical
	// positions is the canonical form already; returning it saves an allocation on the
	// request path.
	if len(t) == canonicalLen && isCanonicalLayout(t) {
		return t, nil
	}
	return formatWords(&words), nil
}

// PasswordKey returns the 128-bit key behind a recovery password: the 8 words (block/11) as
// little-endian uint16s in block order. It accepts every form ParsePassword accepts.
func PasswordKey(s string) ([16]byte, error) {
	var key [16]byte
	words, err := parseWords(strings.TrimSpace(s))
	if err != nil {
		return key, err
	}
	for i, w := range words {
		binary.LittleEndian.PutUint16(key[2*i:], w)
	}
	return key, nil
}

// ParseRecoveryKey accepts a 256-bit recovery key as 64 hex digits in either case (hyphens or
// spaces between groups tolerated) or as base64 of exactly 32 bytes (standard or URL-safe
// alphabet, padded or not). Surrounding whitespace is ignored.
func ParseRecoveryKey(s string) ([32]byte, error) {
	t := strings.TrimSpace(s)
	if k, ok := parseHexKey(t); ok {
		return k, nil
	}
	if k, ok := parseBase64Key(t); ok {
		return k, nil
	}
	return [32]byte{}, errRecoveryKey
}

// FormatRecoveryKey returns k as 64 upper-case hex digits.
func FormatRecoveryKey(k [32]byte) string {
	const digits = "0123456789ABCDEF"
	var buf [64]byte
	for i, b := range k {
		buf[2*i] = digits[b>>4]
		buf[2*i+1] = digits[b&0x0f]
	}
	return string(buf[:])
}

// CanonicalRecoveryKey parses s like ParseRecoveryKey and returns it as FormatRecoveryKey does,
// so that one key always has one stored form.
func CanonicalRecoveryKey(s string) (string, error) {
	k, err := ParseRecoveryKey(s)
	if err != nil {
		return "", err
	}
	return FormatRecoveryKey(k), nil
}

func isSeparator(c byte) bool { return c == '-' || c == ' ' }

func isCanonicalLayout(t string) bool {
	for i := blockDigits; i < len(t); i += blockDigits + 1 {
		if t[i] != '-' {
			return false
		}
	}
	return true
}

// parseWords validates a trimmed recovery password and returns its 8 words. It works on
// offsets into t so that parsing itself does not allocate.
func parseWords(t string) ([blocks]uint16, error) {
	var words [blocks]uint16
	var bounds [blocks][2]int
	n := 0 // number of blocks seen, counted on past 8 only far enough to report it
	for i := 0; i < len(t); {
		if isSeparator(t[i]) {
			i++
			continue
		}
		start := i
		for i < len(t) && !isSeparator(t[i]) {
			i++
		}
		if n < blocks {
			bounds[n] = [2]int{start, i}
		}
		if n <= maxReportedCount {
			n++
		}
	}
	// A single 48-byte run is the form without separators; it is cut into blocks of 6 so
	// that a bad character is still reported against the block it falls in.
	if n == 1 && bounds[0][1]-bounds[0][0] == blocks*blockDigits {
		start := bounds[0][0]
		for b := range bounds {
			bounds[b] = [2]int{start + b*blockDigits, start + (b+1)*blockDigits}
		}
		n = blocks
	}
	if n != blocks {
		return words, &PasswordError{Problem: "recovery password must have 8 blocks of 6 digits, got " + countBlocks(n)}
	}
	for b, bd := range bounds {
		w, problem := parseBlock(t[bd[0]:bd[1]])
		if problem != "" {
			return words, &PasswordError{Block: b + 1, Problem: problem}
		}
		words[b] = w
	}
	return words, nil
}

func countBlocks(n int) string {
	switch {
	case n == 1:
		return "1 block"
	case n > maxReportedCount:
		return "more than " + strconv.Itoa(maxReportedCount) + " blocks"
	default:
		return strconv.Itoa(n) + " blocks"
	}
}

// parseBlock returns the word behind one block, or a problem description that mentions
// nothing from the block but its length.
func parseBlock(b string) (uint16, string) {
	v := 0
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c < '0' || c > '9' {
			// Non-ASCII digits (Arabic-Indic, full-width, ...) land here too: Windows only
			// ever prints ASCII digits, and accepting others would give one key many forms.
			return 0, "contains a character that is not a digit"
		}
		if i < blockDigits {
			v = v*10 + int(c-'0')
		}
	}
	if len(b) != blockDigits {
		if len(b) > maxReportedCount {
			return 0, "has more than " + strconv.Itoa(maxReportedCount) + " digits, want 6"
		}
		return 0, "has " + strconv.Itoa(len(b)) + " digits, want 6"
	}
	if v%11 != 0 {
		return 0, "is not a multiple of 11"
	}
	if v >= blockLimit {
		// Written as a quotient rather than "below 720896": a six-digit number in the message
		// could equal one of the input's blocks.
		return 0, "is too large: block/11 must be below 65536"
	}
	return uint16(v / 11), ""
}

// formatWords writes each word as its block (word*11, zero-padded to 6 digits).
func formatWords(words *[blocks]uint16) string {
	var buf [canonicalLen]byte
	for b, w := range words {
		v := uint32(w) * 11
		off := b * (blockDigits + 1)
		for i := blockDigits - 1; i >= 0; i-- {
			buf[off+i] = byte('0' + v%10)
			v /= 10
		}
		if b < blocks-1 {
			buf[off+blockDigits] = '-'
		}
	}
	return string(buf[:])
}

// parseHexKey decodes 64 hex digits, skipping hyphens and spaces so that grouped forms such
// as "0123ABCD-..." are accepted.
func parseHexKey(t string) ([32]byte, bool) {
	var k [32]byte
	n := 0 // nibbles decoded
	for i := 0; i < len(t); i++ {
		c := t[i]
		if isSeparator(c) {
			continue
		}
		v, ok := hexValue(c)
		if !ok || n == 2*len(k) {
			return [32]byte{}, false
		}
		if n%2 == 0 {
			k[n/2] = v << 4
		} else {
			k[n/2] |= v
		}
		n++
	}
	if n != 2*len(k) {
		return [32]byte{}, false
	}
	return k, true
}

func hexValue(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// base64Encodings are tried in turn. They are strict so that one key has exactly one
// spelling per encoding (no stray bits in the last character).
var base64Encodings = [...]*base64.Encoding{
	base64.StdEncoding.Strict(),
	base64.RawStdEncoding.Strict(),
	base64.URLEncoding.Strict(),
	base64.RawURLEncoding.Strict(),
}

func parseBase64Key(t string) ([32]byte, bool) {
	var k [32]byte
	// base64 of 32 bytes is 43 characters unpadded or 44 padded; checking first also keeps
	// huge inputs away from the decoder. The decoders silently skip '\r' and '\n', which
	// would let a padded-length string with a line break in it through as unpadded.
	if (len(t) != 43 && len(t) != 44) || strings.ContainsAny(t, "\r\n") {
		return k, false
	}
	var buf [33]byte // DecodedLen(44) == 33
	for _, enc := range base64Encodings {
		n, err := enc.Decode(buf[:], []byte(t))
		if err == nil && n == len(k) {
			copy(k[:], buf[:n])
			return k, true
		}
	}
	return k, false
}
