package audit

import (
	"encoding/hex"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// recordTimeLayout spells times as the canonical encoding does, so an auditor can recompute a
// hash from an export without guessing at precision. It is a separate constant because the API
// format may evolve and the canonical one may not.
const recordTimeLayout = "2006-01-02T15:04:05.000000Z"

// Record is the JSON form of an audit event on the API and in exports. It is a wire type:
// its field names and formats are part of the public API, independent of the canonical
// encoding that the hashes cover.
type Record struct {
	Seq       int64       `json:"seq"`
	Time      string      `json:"time"` // RFC 3339, UTC, six fractional digits
	Actor     RecordActor `json:"actor"`
	Action    string      `json:"action"`
	DeviceID  string      `json:"deviceId,omitempty"`
	KeyID     string      `json:"keyId,omitempty"`
	Source    string      `json:"source"`
	Reason    string      `json:"reason,omitempty"`
	Outcome   string      `json:"outcome"`
	IP        string      `json:"ip,omitempty"`
	UserAgent string      `json:"userAgent,omitempty"`
	Detail    string      `json:"detail,omitempty"`
	Ticket    string      `json:"ticket,omitempty"`
	Hash      string      `json:"hash"` // lower-case hex
}

// RecordActor is the actor of a Record.
type RecordActor struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Name string `json:"name"`
}

// ToRecord returns the wire form of e.
func ToRecord(e escrow.AuditEvent) Record {
	return Record{
		Seq:       e.Seq,
		Time:      e.Time.UTC().Truncate(time.Microsecond).Format(recordTimeLayout),
		Actor:     RecordActor{Type: string(e.Actor.Type), ID: e.Actor.ID, Name: e.Actor.Name},
		Action:    e.Action,
		DeviceID:  e.DeviceID,
		KeyID:     e.KeyID,
		Source:    string(e.Source),
		Reason:    e.Reason,
		Outcome:   string(e.Outcome),
		IP:        e.IP,
		UserAgent: e.UserAgent,
		Detail:    e.Detail,
		Ticket:    e.Ticket,
		Hash:      hex.EncodeToString(e.Hash),
	}
}
