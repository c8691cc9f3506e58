package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/keyward/keyward/internal/escrow"
)

// The keyed chain. Whoever can write the database can recompute plain SHA-256 hashes, so a
// chain of them shows accidents, not an attacker: rewritten events re-hashed, or the last ones
// deleted and the head moved back, verify. Events are therefore chained with HMAC-SHA256 under
// a key that is not in the database in the clear (the store keeps it sealed by the master key),
// and the head is authenticated too, so that cutting events off the end is caught.
//
// Events written before an installation's chain was keyed keep their SHA-256 hashes: a Key
// records the switch-over point (the last plain event and its hash), and the first keyed event
// chains from that hash. The switch-over point is kept with the key, under the same seal, so it
// cannot be moved to turn keyed events into plain ones.
//
// What the database alone cannot detect: a rollback to an older copy (an earlier chain and its
// authenticated head, or a check value from before the chain was keyed, which keys it anew).
// Compare the head with a record kept elsewhere (an exported trail, a backup) for that.

// KeySize is the length of the chain's MAC key.
const KeySize = 32

// headLabel separates the head's MAC from the events' (both under the same key).
const headLabel = "keyward audit head v1\x00"

// Key is what verifying and extending the keyed chain needs.
type Key struct {
	MAC []byte // KeySize bytes
	// SwitchSeq is the last event hashed with plain SHA-256 (0: none, every event is keyed),
	// SwitchHash its hash (Genesis() for 0).
	SwitchSeq  int64
	SwitchHash []byte
}

// Head is the chain head as stored: the last seq, its hash and the head's MAC.
type Head struct {
	Seq  int64
	Hash []byte
	MAC  []byte
}

// MAC returns HMAC-SHA256 under key of prev || Canonical(e): the hash of an event of the keyed
// chain. It uses the same canonical encoding as Hash, which must never change either.
func MAC(key, prev []byte, e escrow.AuditEvent) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(prev)
	m.Write(Canonical(e))
	return m.Sum(nil)
}

// HeadMAC authenticates a chain head: HMAC-SHA256 under key of "keyward audit head v1", a NUL,
// seq as 8 big-endian bytes and hash. The encoding must never change.
func HeadMAC(key []byte, seq int64, hash []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(headLabel))
	m.Write(binary.BigEndian.AppendUint64(nil, uint64(seq)))
	m.Write(hash)
	return m.Sum(nil)
}

// CheckHead reports whether head's MAC is right under k. Appending checks it before chaining
// from the head: a head moved back by someone without the key must never be extended into a
// chain that verifies.
func (k Key) CheckHead(h Head) bool {
	return hmac.Equal(h.MAC, HeadMAC(k.MAC, h.Seq, h.Hash))
}

// VerifyKeyed walks the chain as Verify does, with events up to k.SwitchSeq checked as plain
// SHA-256 (the last of them must have k.SwitchHash) and the later ones as MACs under k.MAC,
// then checks head: its MAC, and that it names the last event. It returns the number of events
// that checked out; a broken link or head is a *BrokenError (Truncated when the end of the
// chain is missing or the head does not authenticate).
func VerifyKeyed(k Key, head Head, next func() (e escrow.AuditEvent, ok bool, err error)) (checked int64, err error) {
	prev := Genesis()
	for {
		e, ok, err := next()
		if err != nil {
			return checked, fmt.Errorf("audit: reading the event after seq %d: %w", checked, err)
		}
		if !ok {
			break
		}
		want := checked + 1
		if e.Seq != want {
			return checked, &BrokenError{Seq: want, Problem: fmt.Sprintf("expected seq %d, found %d", want, e.Seq)}
		}
		if e.Seq <= k.SwitchSeq {
			if !bytes.Equal(e.Hash, Hash(prev, e)) {
				return checked, &BrokenError{Seq: want, Problem: "hash does not match the event"}
			}
			if e.Seq == k.SwitchSeq && !bytes.Equal(e.Hash, k.SwitchHash) {
				return checked, &BrokenError{Seq: want, Problem: "the events up to here, written before the chain was keyed, were rewritten: the hash differs from the one recorded when the chain was keyed"}
			}
		} else if !hmac.Equal(e.Hash, MAC(k.MAC, prev, e)) {
			return checked, &BrokenError{Seq: want, Problem: "hash does not match the event (it is not the MAC of the keyed chain)"}
		}
		prev = e.Hash
		checked++
	}
	// Checked in this order so that the first problem named is the one that explains the rest.
	switch {
	case !k.CheckHead(head):
		return checked, &BrokenError{Seq: checked + 1, Truncated: true, Problem: fmt.Sprintf(
			"the chain head (seq %d) does not authenticate: it was moved or rewritten, so the end of the chain may have been cut off after seq %d", head.Seq, checked)}
	case checked < k.SwitchSeq:
		return checked, &BrokenError{Seq: checked + 1, Truncated: true, Problem: fmt.Sprintf(
			"the end of the chain was cut off: the chain was keyed after seq %d", k.SwitchSeq)}
	case head.Seq > checked:
		return checked, &BrokenError{Seq: checked + 1, Truncated: true, Problem: fmt.Sprintf(
			"the end of the chain was cut off: the head is at seq %d", head.Seq)}
	case head.Seq < checked:
		return head.Seq, &BrokenError{Seq: head.Seq + 1, Problem: fmt.Sprintf("event beyond the chain head (seq %d)", head.Seq)}
	case !bytes.Equal(head.Hash, prev):
		return checked, &BrokenError{Seq: checked, Problem: "the chain head does not match the last event"}
	}
	return checked, nil
}
