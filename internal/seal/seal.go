// Package seal encrypts key material before it reaches the database.
//
// Threat model: the database (or a backup of it) can be copied or stolen
// without the master key file, which lives elsewhere on disk. Such a copy
// must reveal no recovery keys. Each secret is therefore sealed with AEAD
// under its own freshly generated data key (DEK), and the DEK is wrapped
// (encrypted) by the master key. Both encryptions use the same additional
// data, built by [AAD] from the row's identity (deviceId + keyId), so a
// ciphertext copied into another row — or a wrapped key paired with another
// row's ciphertext — fails to open instead of silently yielding another
// device's key.
//
// The master key is a Tink keyset rather than a raw key so that it can be
// rotated: Tink ciphertexts start with the ID of the key that produced
// them, so values sealed under an older primary key stay readable after a
// new primary is added, and [Sealer.Rewrap] moves them to the new primary
// without ever decrypting the secret itself.
//
// This package does not protect against an attacker who can read both the
// database and the master key file, or who controls the running server.
package seal

import (
	"bytes"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync/atomic"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// Sealed is what the database stores for one secret: two columns.
type Sealed struct {
	Ciphertext []byte // the secret, AEAD-encrypted under the data key
	WrappedKey []byte // the data key (a Tink keyset, AES256-GCM), encrypted under the master key with the same AAD
}

// Sealer seals and opens secrets under one master keyset. It is safe for
// concurrent use: the keyset is swapped atomically when its file is re-read,
// and Tink primitives are safe for concurrent use themselves.
type Sealer struct {
	ring atomic.Pointer[keyring]
	// file is the master key file the keyset came from; nil for a Sealer made
	// by New, which never re-reads anything.
	file *keyFile
}

// keyring is one loaded master keyset: never changed once built.
type keyring struct {
	master  tink.AEAD
	primary uint32
	ids     []uint32 // every key of the keyset, primary included
}

func newKeyring(h *keyset.Handle, master tink.AEAD) *keyring {
	info := h.KeysetInfo()
	r := &keyring{master: master, primary: info.GetPrimaryKeyId()}
	for _, k := range info.GetKeyInfo() {
		r.ids = append(r.ids, k.GetKeyId())
	}
	slices.Sort(r.ids)
	return r
}

func (r *keyring) has(id uint32) bool {
	_, found := slices.BinarySearch(r.ids, id)
	return found
}

// keys returns the loaded keyset, or nil for a zero Sealer.
func (s *Sealer) keys() *keyring {
	if s == nil {
		return nil
	}
	return s.ring.Load()
}

// PrimaryKeyID is the ID of the master key that wraps every new data key.
func (s *Sealer) PrimaryKeyID() uint32 {
	if r := s.keys(); r != nil {
		return r.primary
	}
	return 0
}

// KeyIDs returns the IDs of every key of the loaded master keyset, in order.
func (s *Sealer) KeyIDs() []uint32 {
	if r := s.keys(); r != nil {
		return slices.Clone(r.ids)
	}
	return nil
}

// tinkPrefix is the first byte of a ciphertext of a Tink key with the TINK
// output prefix (every key Keyward generates); the 4-byte key ID follows.
const tinkPrefix = 0x01

// WrappingKeyID returns the ID of the master key that wrapped a data key
// (the WrappedKey column), read from the ciphertext's prefix without
// decrypting anything. Re-wrapping uses it to skip values already wrapped by
// the primary key, and retiring keys uses it to count what each key still
// wraps.
func WrappingKeyID(wrapped []byte) (uint32, error) {
	if len(wrapped) == 0 {
		return 0, errors.New("wrapped key is empty")
	}
	ek, err := keyset.NewBinaryReader(bytes.NewReader(wrapped)).ReadEncrypted()
	if err != nil {
		return 0, errors.New("not a wrapped data key")
	}
	ct := ek.GetEncryptedKeyset()
	if len(ct) < 5 || ct[0] != tinkPrefix {
		return 0, errors.New("wrapped data key has no Tink key ID prefix")
	}
	return binary.BigEndian.Uint32(ct[1:5]), nil
}

// ErrOpen is wrapped by every error from [Sealer.Open] and [Sealer.Rewrap]
// that comes from the sealed value itself. AEAD cannot tell a wrong AAD from
// damaged bytes or a wrong master key, so neither can this error.
var ErrOpen = errors.New("sealed value does not open with this master key and row")

// ErrWrongMasterKey is returned by [Sealer.VerifyCheck].
var ErrWrongMasterKey = errors.New("the master key does not match this database")

var errNoSealer = errors.New("seal: Sealer is not initialised; use New, Load or LoadOrCreate")

// aadLabel versions the AAD encoding. Stored ciphertexts depend on the exact
// bytes, so any change needs a new label and a migration, never an edit.
const aadLabel = "keyward/v1"

// AAD returns the additional data binding a secret to its row: the label
// "keyward/v1", then purpose and each part, each preceded by its length as a
// big-endian uint32. The length prefixes keep ("ab","c") and ("a","bc")
// apart. The encoding must never change.
//
// AAD panics if a part is 4 GiB or longer; identifiers never are.
func AAD(purpose string, parts ...string) []byte {
	n := len(aadLabel) + 4 + len(purpose)
	for _, p := range parts {
		n += 4 + len(p)
	}
	b := make([]byte, 0, n)
	b = append(b, aadLabel...)
	b = appendPart(b, purpose)
	for _, p := range parts {
		b = appendPart(b, p)
	}
	return b
}

func appendPart(b []byte, p string) []byte {
	if uint64(len(p)) > math.MaxUint32 {
		panic("seal: AAD part longer than 4 GiB")
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
	return append(b, p...)
}

// Seal encrypts plaintext under a new data key and wraps that key under the
// master key's primary, both bound to aad.
//
// An empty aad is refused: it would bind the value to no row, which is
// always a caller bug in this design.
func (s *Sealer) Seal(plaintext, aad []byte) (Sealed, error) {
	if s.keys() == nil {
		return Sealed{}, errNoSealer
	}
	if len(aad) == 0 {
		return Sealed{}, errors.New("seal: empty additional data; build it with AAD so the value is bound to its row")
	}
	dek, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		return Sealed{}, fmt.Errorf("seal: generating data key: %w", err)
	}
	dekAEAD, err := aead.New(dek)
	if err != nil {
		return Sealed{}, fmt.Errorf("seal: data key primitive: %w", err)
	}
	ct, err := dekAEAD.Encrypt(plaintext, aad)
	if err != nil {
		return Sealed{}, fmt.Errorf("seal: encrypting: %w", err)
	}
	// A new primary written to the key file by a rotation is picked up here,
	// so that new values stop using the old key without a restart.
	s.refreshIfReplaced()
	wrapped, err := s.keys().wrap(dek, aad)
	if err != nil {
		return Sealed{}, err
	}
	return Sealed{Ciphertext: ct, WrappedKey: wrapped}, nil
}

// Open authenticates and decrypts sealed under aad. Every failure caused by
// the sealed bytes, the aad or the master key wraps [ErrOpen].
func (s *Sealer) Open(sealed Sealed, aad []byte) ([]byte, error) {
	if s.keys() == nil {
		return nil, errNoSealer
	}
	if len(sealed.Ciphertext) == 0 {
		return nil, fmt.Errorf("%w: ciphertext is empty", ErrOpen)
	}
	dek, err := s.unwrap(sealed.WrappedKey, aad)
	if err != nil {
		return nil, err
	}
	dekAEAD, err := aead.New(dek)
	if err != nil {
		return nil, fmt.Errorf("%w: data key is unusable", ErrOpen)
	}
	pt, err := dekAEAD.Decrypt(sealed.Ciphertext, aad)
	if err != nil {
		// The data key opened, so master key and row are right; the
		// ciphertext column is what does not match.
		return nil, fmt.Errorf("%w: ciphertext does not authenticate", ErrOpen)
	}
	return pt, nil
}

// Rewrap re-encrypts sealed's data key under the current primary master key,
// for master-key rotation. Ciphertext is returned unchanged (as a copy) and is
// not checked: rotation never needs the secret itself in memory.
//
// The result is verified before it is returned: it must be wrapped by the
// primary key and unwrap, under aad, to the very data key it started from. A
// caller that stores only what Rewrap returns never makes a value unopenable.
func (s *Sealer) Rewrap(sealed Sealed, aad []byte) (Sealed, error) {
	if s.keys() == nil {
		return Sealed{}, errNoSealer
	}
	dek, err := s.unwrap(sealed.WrappedKey, aad)
	if err != nil {
		return Sealed{}, err
	}
	r := s.keys()
	wrapped, err := r.wrap(dek, aad)
	if err != nil {
		return Sealed{}, err
	}
	if err := r.verifyWrapped(wrapped, dek, aad); err != nil {
		return Sealed{}, err
	}
	return Sealed{Ciphertext: bytes.Clone(sealed.Ciphertext), WrappedKey: wrapped}, nil
}

// verifyWrapped checks that wrapped is wrapped by r's primary and holds dek.
func (r *keyring) verifyWrapped(wrapped []byte, dek *keyset.Handle, aad []byte) error {
	if id, err := WrappingKeyID(wrapped); err != nil || id != r.primary {
		return errors.New("seal: re-wrapped data key is not wrapped by the primary master key")
	}
	back, err := r.unwrap(wrapped, aad)
	if err != nil {
		return errors.New("seal: re-wrapped data key does not open")
	}
	a, b := cleartext(dek), cleartext(back)
	defer clear(a)
	defer clear(b)
	if len(a) == 0 || subtle.ConstantTimeCompare(a, b) != 1 {
		return errors.New("seal: re-wrapped data key differs from the original")
	}
	return nil
}

// cleartext serializes a data key for comparison; nil if it cannot.
func cleartext(h *keyset.Handle) []byte {
	var buf bytes.Buffer
	if err := insecurecleartextkeyset.Write(h, keyset.NewBinaryWriter(&buf)); err != nil {
		return nil
	}
	return buf.Bytes()
}

// wrap uses the binary keyset encoding, which (unlike JSON) also omits the
// cleartext keyset info, keeping the column small.
func (r *keyring) wrap(dek *keyset.Handle, aad []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := dek.WriteWithAssociatedData(keyset.NewBinaryWriter(&buf), r.master, aad); err != nil {
		return nil, fmt.Errorf("seal: wrapping data key: %w", err)
	}
	return buf.Bytes(), nil
}

// unwrap opens a wrapped data key. A value wrapped by a key this keyset lacks
// may come from a rotation whose new key file this process has not read yet:
// the file is re-read (at most once per reload interval) and the unwrap tried
// once more.
func (s *Sealer) unwrap(wrapped, aad []byte) (*keyset.Handle, error) {
	r := s.keys()
	dek, err := r.unwrap(wrapped, aad)
	if err == nil {
		return dek, nil
	}
	id, idErr := WrappingKeyID(wrapped)
	if idErr != nil || r.has(id) || !s.reloadFor(id) {
		return nil, err
	}
	return s.keys().unwrap(wrapped, aad)
}

// unwrap never passes Tink's error text on: the caller only needs to know
// that the value does not open, and the text varies between Tink versions.
func (r *keyring) unwrap(wrapped, aad []byte) (*keyset.Handle, error) {
	if len(wrapped) == 0 {
		return nil, fmt.Errorf("%w: wrapped key is empty", ErrOpen)
	}
	dek, err := keyset.ReadWithAssociatedData(keyset.NewBinaryReader(bytes.NewReader(wrapped)), r.master, aad)
	if err != nil {
		return nil, fmt.Errorf("%w: wrapped data key does not authenticate", ErrOpen)
	}
	return dek, nil
}

// checkPlaintext is public knowledge; the check value proves possession of
// the master key, not secrecy of its content. Never change it: existing
// databases store it sealed.
const checkPlaintext = "keyward master key check v1"

// checkPlaintextV2 starts the second version of the check value, which also
// carries a payload of the store's (the audit chain's key and switch-over
// point) after it. Never change it either.
const checkPlaintextV2 = "keyward master key check v2\n"

// NewCheck seals a fixed, known plaintext under AAD("check"): the first
// version of the check value, which carries nothing else. The store keeps a
// check value so that start-up with the wrong master key fails at once with
// a clear message instead of on the first read of a real secret; it writes
// the second version ([Sealer.NewCheckWith]) and reads both.
func (s *Sealer) NewCheck() (Sealed, error) {
	return s.Seal([]byte(checkPlaintext), AAD("check"))
}

// NewCheckWith seals the second version of the check value: the fixed text
// followed by payload, under AAD("check"). The payload is secret from anyone
// without the master key, and authenticated: nobody without it can make or
// change one.
func (s *Sealer) NewCheckWith(payload []byte) (Sealed, error) {
	return s.Seal(append([]byte(checkPlaintextV2), payload...), AAD("check"))
}

// VerifyCheck returns [ErrWrongMasterKey] if c does not open under this
// master key or does not hold the expected content (either version).
func (s *Sealer) VerifyCheck(c Sealed) error {
	_, err := s.OpenCheck(c)
	return err
}

// OpenCheck opens a check value of either version and returns its payload:
// nil for the first version, which has none. It returns [ErrWrongMasterKey]
// if c does not open under this master key or holds neither text.
func (s *Sealer) OpenCheck(c Sealed) ([]byte, error) {
	if s.keys() == nil {
		return nil, errNoSealer
	}
	pt, err := s.Open(c, AAD("check"))
	switch {
	case err != nil:
		return nil, ErrWrongMasterKey
	case string(pt) == checkPlaintext:
		return nil, nil
	case bytes.HasPrefix(pt, []byte(checkPlaintextV2)) && len(pt) > len(checkPlaintextV2):
		return pt[len(checkPlaintextV2):], nil
	}
	clear(pt)
	return nil, ErrWrongMasterKey
}
