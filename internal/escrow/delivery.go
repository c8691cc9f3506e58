package escrow

import "time"

// DeliveryState is where the delivery of the audit trail to one outside receiver (a sink:
// syslog, a webhook) stands. Every field is safe to show: no event content.
type DeliveryState struct {
	Sink string
	// Cursor is the seq of the last event the sink accepted; 0 before the first.
	Cursor int64
	// Head is the seq of the newest event of the trail.
	Head int64
	// OldestPending is the time of the first event after the cursor; zero when caught up.
	OldestPending time.Time
	// Holder names the server that holds the sink's lease, and LeaseUntil when it runs out.
	Holder     string
	LeaseUntil time.Time
	// FailingSince is when the sink's current run of failed attempts began; zero while its
	// last attempt succeeded.
	FailingSince time.Time
	// Exists is false for a sink no server has started to deliver yet.
	Exists bool
}

// Lag is the number of events of the trail the sink has not accepted yet.
func (s DeliveryState) Lag() int64 { return max(s.Head-s.Cursor, 0) }

// LagAge is how long the oldest event the sink has not accepted has waited; 0 when caught up.
func (s DeliveryState) LagAge(now time.Time) time.Duration {
	if s.OldestPending.IsZero() {
		return 0
	}
	return max(now.Sub(s.OldestPending), 0)
}
