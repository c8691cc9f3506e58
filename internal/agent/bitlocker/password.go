package bitlocker

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// The recovery password format (SPEC §3): 48 digits in 8 blocks of 6, joined by hyphens. Each
// block is a multiple of 11 below 720896; block/11 is one 16-bit word of the 128-bit key. The
// agent has its own copy of the format rather than sharing the server's, so that the two
// programs stay independent; the server checks every password it is sent with its own parser.

const (
	passwordBlocks = 8
	blockDigits    = 6
	// canonicalLen is 8 blocks of 6 digits and the 7 hyphens between them.
	canonicalLen = passwordBlocks*blockDigits + passwordBlocks - 1
	// blockLimit is the first block value whose quotient by 11 no longer fits 16 bits.
	blockLimit = 65536 * 11
)

// PasswordError says why a recovery password was rejected. It never holds any of the password.
type PasswordError struct {
	Block   int    // 1-based position of the bad block, 0 when not about one block
	Problem string // e.g. "is not a multiple of 11"
}

func (e *PasswordError) Error() string {
	if e.Block == 0 {
		return "recovery password " + e.Problem
	}
	return "recovery password block " + strconv.Itoa(e.Block) + " " + e.Problem
}

// ParsePassword checks a recovery password and returns it in canonical form. Blocks may be
// separated by hyphens or spaces, or the 48 digits given without separators.
func ParsePassword(s string) (string, error) {
	words, err := passwordWords(strings.TrimSpace(s))
	if err != nil {
		return "", err
	}
	return formatWords(words), nil
}

// GeneratePassword returns a new canonical recovery password from 16 bytes of r (crypto/rand in
// production). Each word is a full 16-bit value, so every block is uniform over its valid values.
func GeneratePassword(r io.Reader) (string, error) {
	var key [16]byte
	if _, err := io.ReadFull(r, key[:]); err != nil {
		return "", fmt.Errorf("generating a recovery password: %w", err)
	}
	var words [passwordBlocks]uint16
	for i := range words {
		words[i] = binary.LittleEndian.Uint16(key[2*i:])
	}
	clear(key[:])
	return formatWords(words), nil
}

// Fingerprint is the proof of SPEC §3 that the agent holds a password without sending it: the
// lower-case hex HMAC-SHA256 of the canonical password in ASCII, keyed with the device's
// verification key (the decoded bytes). The server computes the same over what it holds.
func Fingerprint(verificationKey []byte, canonicalPassword string) string {
	m := hmac.New(sha256.New, verificationKey)
	m.Write([]byte(canonicalPassword))
	return hex.EncodeToString(m.Sum(nil))
}

// FormatRecoveryKey writes a 256-bit recovery key the way the server stores it: 64 upper-case
// hex digits.
func FormatRecoveryKey(k [32]byte) string {
	return strings.ToUpper(hex.EncodeToString(k[:]))
}

func passwordWords(t string) ([passwordBlocks]uint16, error) {
	var words [passwordBlocks]uint16
	fields := strings.FieldsFunc(t, func(r rune) bool { return r == '-' || r == ' ' })
	if len(fields) == 1 && len(fields[0]) == passwordBlocks*blockDigits {
		// The form without separators: cut it into blocks so that a bad character is still
		// reported against the block it falls in.
		run := fields[0]
		fields = make([]string, passwordBlocks)
		for i := range fields {
			fields[i] = run[i*blockDigits : (i+1)*blockDigits]
		}
	}
	if len(fields) != passwordBlocks {
		n := strconv.Itoa(len(fields))
		if len(fields) > 99 {
			n = "more than 99" // a count with six digits could coincide with a block
		}
		return words, &PasswordError{Problem: "must have 8 blocks of 6 digits, got " + n}
	}
	for i, f := range fields {
		w, problem := blockWord(f)
		if problem != "" {
			return words, &PasswordError{Block: i + 1, Problem: problem}
		}
		words[i] = w
	}
	return words, nil
}

// blockWord returns the word behind one block, or a problem that mentions nothing of the block
// but its length.
func blockWord(b string) (uint16, string) {
	v := 0
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c < '0' || c > '9' {
			return 0, "contains a character that is not a digit"
		}
		if i < blockDigits {
			v = v*10 + int(c-'0')
		}
	}
	if len(b) != blockDigits {
		if len(b) > 99 {
			return 0, "has more than 99 digits, want 6"
		}
		return 0, "has " + strconv.Itoa(len(b)) + " digits, want 6"
	}
	if v%11 != 0 {
		return 0, "is not a multiple of 11"
	}
	if v >= blockLimit {
		return 0, "is too large: block/11 must be below 65536"
	}
	return uint16(v / 11), ""
}

func formatWords(words [passwordBlocks]uint16) string {
	var buf [canonicalLen]byte
	for b, w := range words {
		v := uint32(w) * 11
		off := b * (blockDigits + 1)
		for i := blockDigits - 1; i >= 0; i-- {
			buf[off+i] = byte('0' + v%10)
			v /= 10
		}
		if b < passwordBlocks-1 {
			buf[off+blockDigits] = '-'
		}
	}
	return string(buf[:])
}
