// Package audit is the encoding, verification and export of Keyward's hash-chained audit
// trail.
//
// Each event stores hash = HMAC-SHA256(key, previous event's hash || canonical encoding of the
// event) (keyed.go); events written before an installation's chain was keyed store
// SHA-256(previous event's hash || canonical encoding), up to a recorded switch-over point.
// The first event's previous hash is 32 zero bytes (Genesis). Because every hash covers its
// predecessor, editing, deleting, inserting or reordering a stored event breaks every later
// link; Verify walks the chain in seq order and names the first broken one.
//
// The package only computes and checks hashes; the store assigns seq and time and persists
// the hash, and the HTTP and CLI adapters use the Writers to export the trail.
package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// canonicalTimeLayout has a fixed six-digit fraction so that a given instant has exactly one
// spelling; RFC3339Nano trims trailing zeros and would make the width vary.
const canonicalTimeLayout = "2006-01-02T15:04:05.000000Z"

// Genesis returns the previous hash of the first event: 32 zero bytes. It is a function, not a
// variable, so that no caller can corrupt the chain's anchor for everyone by writing into a
// shared slice.
func Genesis() []byte { return make([]byte, sha256.Size) }

// Canonical returns the canonical encoding of e: every field except Hash, as the JSON array
//
//	[seq, time, actor.type, actor.id, actor.name, action, deviceId, keyId, source, reason,
//	 outcome, ip, userAgent, detail]
//
// with time in UTC, truncated to microseconds (the store keeps no more) and written as
// RFC 3339 with exactly six fractional digits, e.g. "2026-11-25T10:00:00.000000Z". Strings are
// escaped by encoding/json, including its HTML escaping of <, > and &.
//
// !!! THE CANONICAL ENCODING MUST NEVER CHANGE. !!!
// Every stored hash was computed over these exact bytes. Reordering, adding or removing a
// field, changing the time layout or precision, or changing how strings are escaped (for
// example json.Encoder with SetEscapeHTML(false)) makes every existing audit trail fail
// verification. A new field needs a new, versioned encoding that Verify selects per event,
// never an edit here. TestCanonicalGolden pins the bytes; a change that makes it fail is wrong.
//
// Invalid UTF-8 in a string is encoded as U+FFFD, as encoding/json does, so strings that
// differ only in invalid bytes encode alike; callers should store valid UTF-8.
//
// The one versioned extension: an event with a ticket number has it appended as a fifteenth
// element, [..., detail, ticket]. An event without one encodes exactly as before, so every
// event written before tickets existed keeps its hash, and the array's length tells the two
// forms apart (no event of the first form has fifteen elements).
func Canonical(e escrow.AuditEvent) []byte {
	// One Marshal of the string fields spares an allocation per field; its output is
	// ["...",...], which the seq is spliced in front of.
	strs, _ := json.Marshal([...]string{ // marshalling strings cannot fail
		e.Time.UTC().Truncate(time.Microsecond).Format(canonicalTimeLayout),
		string(e.Actor.Type),
		e.Actor.ID,
		e.Actor.Name,
		e.Action,
		e.DeviceID,
		e.KeyID,
		string(e.Source),
		e.Reason,
		string(e.Outcome),
		e.IP,
		e.UserAgent,
		e.Detail,
	})
	b := make([]byte, 0, len(strs)+len("-9223372036854775808,"))
	b = append(b, '[')
	b = strconv.AppendInt(b, e.Seq, 10)
	b = append(b, ',')
	b = append(b, strs[1:]...)
	if e.Ticket == "" {
		return b
	}
	ticket, _ := json.Marshal(e.Ticket) // marshalling a string cannot fail
	b[len(b)-1] = ','
	b = append(b, ticket...)
	return append(b, ']')
}

// Hash returns SHA-256(prev || Canonical(e)). prev is the previous event's stored hash, or
// Genesis() for the first event. e.Hash is ignored.
func Hash(prev []byte, e escrow.AuditEvent) []byte {
	h := sha256.New()
	h.Write(prev)
	h.Write(Canonical(e))
	return h.Sum(nil)
}

// BrokenError reports the first broken link of the audit chain. Seq is the chain position
// that cannot be vouched for: the seq Verify expected next, so every event before it checked
// out. For a missing row that is the missing seq; for a tampered row it is that row's seq.
type BrokenError struct {
	Seq     int64
	Problem string
	// Truncated says that the end of the chain is missing, or cannot be vouched for because
	// the head does not authenticate: events after Seq-1 may have been cut off.
	Truncated bool
}

func (e *BrokenError) Error() string {
	return fmt.Sprintf("audit chain broken at seq %d: %s", e.Seq, e.Problem)
}

// Verify walks the audit trail; next must yield events in ascending seq order and return
// ok=false after the last one. It checks that seq starts at 1 and increases by exactly one, so
// that a deleted or inserted row is caught even if its neighbours were rehashed, and that each
// stored Hash equals Hash(previous stored hash, event).
//
// It returns the number of events that checked out. On the first broken link the error is a
// *BrokenError (and checked is its Seq-1); an error from next is returned wrapped.
func Verify(next func() (e escrow.AuditEvent, ok bool, err error)) (checked int64, err error) {
	prev := Genesis()
	for {
		e, ok, err := next()
		if err != nil {
			return checked, fmt.Errorf("audit: reading the event after seq %d: %w", checked, err)
		}
		if !ok {
			return checked, nil
		}
		want := checked + 1
		if e.Seq != want {
			return checked, &BrokenError{Seq: want, Problem: fmt.Sprintf("expected seq %d, found %d", want, e.Seq)}
		}
		// The hashes are public, so a constant-time comparison would buy nothing.
		if !bytes.Equal(e.Hash, Hash(prev, e)) {
			return checked, &BrokenError{Seq: want, Problem: "hash does not match the event"}
		}
		prev = e.Hash
		checked++
	}
}
