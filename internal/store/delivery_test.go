package store_test

import (
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// TestDeliveryLease holds the lease to its rules on both dialects: one holder at a time, taken
// over only once it ran out or was released; only the holder moves the cursor, never back; a
// new sink starts at the beginning of the trail or at its head; the lag follows the cursor.
func TestDeliveryLease(t *testing.T) {
	e := newEnv(t)
	for range 3 {
		e.enroll("LT-1", "")
	}
	head := int64(e.countEvents(escrow.AuditFilter{}))
	const ttl = 30 * time.Second

	st, held, err := e.db.TakeDeliveryLease(e.ctx, "syslog", "a", ttl, false)
	if err != nil || !held || st.Cursor != 0 || st.Holder != "a" || !st.Exists {
		t.Fatalf("first lease: %+v %v %v", st, held, err)
	}
	if _, held, err := e.db.TakeDeliveryLease(e.ctx, "syslog", "b", ttl, false); err != nil || held {
		t.Fatalf("b took a running lease: %v %v", held, err)
	}
	events, err := e.db.AuditAfter(e.ctx, 0, 2)
	if err != nil || len(events) != 2 || events[0].Seq != 1 || events[1].Seq != 2 {
		t.Fatalf("AuditAfter(0, 2): %v %v", events, err)
	}
	if ok, err := e.db.AdvanceDelivery(e.ctx, "syslog", "b", 2, ttl); err != nil || ok {
		t.Fatalf("b moved a's cursor: %v %v", ok, err)
	}
	if ok, err := e.db.AdvanceDelivery(e.ctx, "syslog", "a", 2, ttl); err != nil || !ok {
		t.Fatalf("a could not move its cursor: %v %v", ok, err)
	}
	if ok, err := e.db.AdvanceDelivery(e.ctx, "syslog", "a", 1, ttl); err != nil || !ok {
		t.Fatalf("a's move back: %v %v", ok, err)
	}
	if ok, err := e.db.MarkDeliveryFailing(e.ctx, "syslog", "a", ttl); err != nil || !ok {
		t.Fatalf("mark failing: %v %v", ok, err)
	}
	markedAt := e.clock.Now()
	e.clock.Advance(time.Second)
	if _, err := e.db.MarkDeliveryFailing(e.ctx, "syslog", "a", ttl); err != nil {
		t.Fatal(err)
	}

	states, err := e.db.DeliveryStates(e.ctx, []string{"syslog", "webhook"})
	if err != nil || len(states) != 2 {
		t.Fatalf("DeliveryStates: %v %v", states, err)
	}
	sl, wh := states[0], states[1]
	third, _ := e.db.AuditAfter(e.ctx, 2, 1)
	if sl.Cursor != 2 || sl.Head != head || sl.Lag() != head-2 || !sl.OldestPending.Equal(third[0].Time) || !sl.FailingSince.Equal(markedAt.UTC().Truncate(time.Microsecond)) {
		t.Fatalf("syslog state %+v (head %d, third event at %v, marked at %v)", sl, head, third[0].Time, markedAt)
	}
	if wh.Exists || wh.Cursor != 0 || wh.Lag() != head {
		t.Fatalf("a sink never started: %+v", wh)
	}

	// The lease runs out: b takes it over at the stored cursor, and a's moves are refused.
	e.clock.Advance(ttl)
	st, held, err = e.db.TakeDeliveryLease(e.ctx, "syslog", "b", ttl, false)
	if err != nil || !held || st.Cursor != 2 || st.Holder != "b" {
		t.Fatalf("takeover after expiry: %+v %v %v", st, held, err)
	}
	if ok, err := e.db.AdvanceDelivery(e.ctx, "syslog", "a", 3, ttl); err != nil || ok {
		t.Fatalf("a moved the cursor after losing the lease: %v %v", ok, err)
	}
	if ok, err := e.db.AdvanceDelivery(e.ctx, "syslog", "b", head, ttl); err != nil || !ok {
		t.Fatalf("b: %v %v", ok, err)
	}
	states, _ = e.db.DeliveryStates(e.ctx, []string{"syslog"})
	if s := states[0]; s.Lag() != 0 || !s.OldestPending.IsZero() || s.LagAge(e.clock.Now()) != 0 || !s.FailingSince.IsZero() {
		t.Fatalf("caught up: %+v", s)
	}

	// A release hands the sink over at once.
	if err := e.db.ReleaseDeliveryLease(e.ctx, "syslog", "b"); err != nil {
		t.Fatal(err)
	}
	if _, held, err := e.db.TakeDeliveryLease(e.ctx, "syslog", "a", ttl, false); err != nil || !held {
		t.Fatalf("after release: %v %v", held, err)
	}

	// A sink started at the head skips what came before; one already started keeps its cursor.
	if st, _, err := e.db.TakeDeliveryLease(e.ctx, "webhook", "a", ttl, true); err != nil || st.Cursor != head {
		t.Fatalf("webhook at head: %+v %v", st, err)
	}
	e.enroll("LT-2", "")
	if st, _, err := e.db.TakeDeliveryLease(e.ctx, "webhook", "a", ttl, true); err != nil || st.Cursor != head {
		t.Fatalf("webhook again: %+v %v", st, err)
	}
	if _, err := e.db.AuditAfter(e.ctx, 0, 0); escrow.ErrorCode(err) != escrow.CodeInvalid {
		t.Fatalf("AuditAfter with no limit: %v", err)
	}
}

// TestDisclosureNamesItsLastEvent: a disclosure reports the seq of the last event it recorded
// (after its key.read comes the rotation it requests), what a fail-closed disclosure waits to
// see delivered.
func TestDisclosureNamesItsLastEvent(t *testing.T) {
	e := newEnv(t)
	en := e.enroll("LT-1", "")
	e.escrowPassword(en, osVolume, genSample(0))
	d := e.disclose(en.DeviceID)
	reads := e.events(escrow.AuditFilter{Action: escrow.ActionKeyRead})
	if len(d.Keys) != 1 || len(reads) != 1 || d.AuditSeq < reads[0].Seq || d.AuditSeq != int64(e.countEvents(escrow.AuditFilter{})) {
		t.Fatalf("disclosure names seq %d; key.read events %v", d.AuditSeq, reads)
	}
}

// TestCopyKeepsDeliveryCursors: a copy (backup, migration to another database) goes on
// delivering where the original stood, not from the beginning of the trail.
func TestCopyKeepsDeliveryCursors(t *testing.T) {
	e := newEnv(t)
	e.enroll("LT-1", "")
	if _, _, err := e.db.TakeDeliveryLease(e.ctx, "syslog", "a", time.Minute, true); err != nil {
		t.Fatal(err)
	}
	want, err := e.db.DeliveryStates(e.ctx, []string{"syslog"})
	if err != nil || want[0].Cursor == 0 {
		t.Fatalf("before the copy: %+v %v", want, err)
	}
	tgt := emptyTarget(t, e.master)
	if _, err := e.db.CopyTo(e.ctx, tgt.db); err != nil {
		t.Fatal(err)
	}
	got, err := tgt.db.DeliveryStates(tgt.ctx, []string{"syslog"})
	if err != nil || got[0] != want[0] {
		t.Fatalf("after the copy: %+v %v, want %+v", got, err, want)
	}
}
