package store

import "github.com/keyward/keyward/internal/escrow"

// cleanEvent escapes control and format characters and invalid UTF-8 in every text of an event
// (escrow.CleanText) before it is hashed and stored. The adapters refuse such text where they
// can (escrow.CheckText) and escape what they cannot refuse (paths, headers, claims); this is
// the backstop, so that no event, whatever its origin, can carry a terminal escape sequence or
// a bidirectional override into an export or a log viewer. Clean text is returned unchanged.
func cleanEvent(e escrow.AuditEvent) escrow.AuditEvent {
	for _, s := range []*string{&e.Actor.ID, &e.Actor.Name, &e.Action, &e.DeviceID, &e.KeyID, &e.Reason, &e.IP, &e.UserAgent, &e.Detail, &e.Ticket} {
		*s = escrow.CleanText(*s)
	}
	return e
}
