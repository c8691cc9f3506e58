package audit_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/escrow"
)

// fullEvent has every field set, with the characters an encoding is most likely to get wrong.
func fullEvent() escrow.AuditEvent {
	return escrow.AuditEvent{
		Seq:       17,
		Time:      time.Date(2026, 11, 25, 11, 0, 0, 123456789, time.FixedZone("CET", 3600)),
		Actor:     escrow.Actor{Type: escrow.ActorUser, ID: "u-0001", Name: "Zoë \"Z\" Łukasz 日本"},
		Action:    escrow.ActionKeyRead,
		DeviceID:  "dev-42",
		KeyID:     "8F1A2B3C-0000-4000-8000-0123456789AB",
		Source:    escrow.SourceAdminPortal,
		Reason:    "Ticket #4711:\n\"locked out\" <after BIOS update> & PIN\treset ✓ 🔑\u2028end\\",
		Outcome:   escrow.OutcomeSuccess,
		IP:        "2001:db8::1",
		UserAgent: "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
		Detail:    "rotation=r-42",
		Hash:      []byte{0xde, 0xad},
	}
}

// TestCanonicalGolden pins the canonical encoding and the hash over it. If this test fails, the
// change is wrong: every stored audit hash depends on these bytes. Do not update the literals.
func TestCanonicalGolden(t *testing.T) {
	const wantCanonical = `[17,"2026-11-25T10:00:00.123456Z","user","u-0001","Zoë \"Z\" Łukasz 日本","key.read","dev-42","8F1A2B3C-0000-4000-8000-0123456789AB","admin_portal","Ticket #4711:\n\"locked out\" \u003cafter BIOS update\u003e \u0026 PIN\treset ✓ 🔑\u2028end\\","success","2001:db8::1","Mozilla/5.0 (Windows NT 10.0; Win64; x64)","rotation=r-42"]`
	const wantHash = "5d11f4024bc1e4b5ca3c8142d88acf56ceb76226a0f1b67520ff2d85ac13cd8f"

	e := fullEvent()
	if got := string(audit.Canonical(e)); got != wantCanonical {
		t.Errorf("Canonical changed:\n got %s\nwant %s", got, wantCanonical)
	}
	if got := hex.EncodeToString(audit.Hash(audit.Genesis(), e)); got != wantHash {
		t.Errorf("Hash(Genesis, e) = %s, want %s", got, wantHash)
	}
}

// TestCanonicalTicket pins the encoding of an event with a ticket number: the ticket appended
// as a fifteenth element, the fourteen before it exactly as in TestCanonicalGolden, so an
// event without a ticket keeps the hash it always had. Do not update the literals.
func TestCanonicalTicket(t *testing.T) {
	const wantCanonical = `[17,"2026-11-25T10:00:00.123456Z","user","u-0001","Zoë \"Z\" Łukasz 日本","key.read","dev-42","8F1A2B3C-0000-4000-8000-0123456789AB","admin_portal","Ticket #4711:\n\"locked out\" \u003cafter BIOS update\u003e \u0026 PIN\treset ✓ 🔑\u2028end\\","success","2001:db8::1","Mozilla/5.0 (Windows NT 10.0; Win64; x64)","rotation=r-42","INC0004711 \u003c\"x\"\u003e"]`
	e := fullEvent()
	e.Ticket = `INC0004711 <"x">`
	if got := string(audit.Canonical(e)); got != wantCanonical {
		t.Errorf("Canonical with a ticket:\n got %s\nwant %s", got, wantCanonical)
	}
	plain := fullEvent()
	if bytes.Equal(audit.Hash(audit.Genesis(), e), audit.Hash(audit.Genesis(), plain)) {
		t.Error("the ticket does not change the hash")
	}
	// The ticket is covered: changing it alone breaks the link.
	other := e
	other.Ticket = "INC0004712"
	if bytes.Equal(audit.MAC([]byte("k"), audit.Genesis(), e), audit.MAC([]byte("k"), audit.Genesis(), other)) {
		t.Error("two tickets give one MAC")
	}
}

// TestCanonicalCoversEveryField fails when escrow.AuditEvent gains or loses a field, because the
// canonical encoding would silently not cover it. Such a field needs a new, versioned encoding.
func TestCanonicalCoversEveryField(t *testing.T) {
	want := []string{"Seq", "Time", "Actor", "Action", "DeviceID", "KeyID", "Source", "Reason",
		"Outcome", "IP", "UserAgent", "Detail", "Ticket", "Hash"}
	var got []string
	for f := range reflect.TypeFor[escrow.AuditEvent]().Fields() {
		got = append(got, f.Name)
	}
	if !slices.Equal(got, want) {
		t.Errorf("escrow.AuditEvent fields = %v, want %v: the canonical encoding must be versioned before the event changes", got, want)
	}
	var actor []string
	for f := range reflect.TypeFor[escrow.Actor]().Fields() {
		actor = append(actor, f.Name)
	}
	if !slices.Equal(actor, []string{"Type", "ID", "Name"}) {
		t.Errorf("escrow.Actor fields = %v: the canonical encoding must be versioned before the actor changes", actor)
	}
}

func TestCanonicalTime(t *testing.T) {
	tests := []struct {
		name string
		time time.Time
		want string
	}{
		{"whole second keeps six digits", time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC), `"2026-11-25T10:00:00.000000Z"`},
		{"nanoseconds are truncated, not rounded", time.Date(2026, 11, 25, 10, 0, 0, 999999999, time.UTC), `"2026-11-25T10:00:00.999999Z"`},
		{"zone is converted to UTC", time.Date(2026, 11, 25, 5, 30, 0, 1000, time.FixedZone("X", -4*3600-30*60)), `"2026-11-25T10:00:00.000001Z"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := string(audit.Canonical(escrow.AuditEvent{Seq: 1, Time: tt.time}))
			if !bytes.Contains([]byte(c), []byte(","+tt.want+",")) {
				t.Errorf("Canonical = %s, want time %s", c, tt.want)
			}
		})
	}
}

func TestHashDependsOnEveryField(t *testing.T) {
	tests := []struct {
		name   string
		change func(*escrow.AuditEvent)
	}{
		{"seq", func(e *escrow.AuditEvent) { e.Seq++ }},
		{"time", func(e *escrow.AuditEvent) { e.Time = e.Time.Add(time.Microsecond) }},
		{"actor.type", func(e *escrow.AuditEvent) { e.Actor.Type = escrow.ActorToken }},
		{"actor.id", func(e *escrow.AuditEvent) { e.Actor.ID += "x" }},
		{"actor.name", func(e *escrow.AuditEvent) { e.Actor.Name += "x" }},
		{"action", func(e *escrow.AuditEvent) { e.Action = escrow.ActionKeyPurge }},
		{"deviceId", func(e *escrow.AuditEvent) { e.DeviceID += "x" }},
		{"keyId", func(e *escrow.AuditEvent) { e.KeyID += "x" }},
		{"source", func(e *escrow.AuditEvent) { e.Source = escrow.SourceCLI }},
		{"reason", func(e *escrow.AuditEvent) { e.Reason += "x" }},
		{"outcome", func(e *escrow.AuditEvent) { e.Outcome = escrow.OutcomeDenied }},
		{"ip", func(e *escrow.AuditEvent) { e.IP += "x" }},
		{"userAgent", func(e *escrow.AuditEvent) { e.UserAgent += "x" }},
		{"detail", func(e *escrow.AuditEvent) { e.Detail += "x" }},
		{"text moved between adjacent fields", func(e *escrow.AuditEvent) {
			e.Actor.ID, e.Actor.Name = e.Actor.ID+e.Actor.Name[:1], e.Actor.Name[1:]
		}},
		{"optional field emptied", func(e *escrow.AuditEvent) { e.DeviceID = "" }},
	}
	base := fullEvent()
	baseHash := audit.Hash(audit.Genesis(), base)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := fullEvent()
			tt.change(&e)
			if h := audit.Hash(audit.Genesis(), e); bytes.Equal(h, baseHash) {
				t.Errorf("changing %s left the hash at %x", tt.name, h)
			}
		})
	}

	t.Run("previous hash", func(t *testing.T) {
		prev := audit.Genesis()
		prev[31] = 1
		if bytes.Equal(audit.Hash(prev, base), baseHash) {
			t.Error("changing the previous hash left the hash unchanged")
		}
	})
}

func TestHashIgnores(t *testing.T) {
	tests := []struct {
		name   string
		change func(*escrow.AuditEvent)
	}{
		{"the stored hash", func(e *escrow.AuditEvent) { e.Hash = []byte("anything") }},
		{"nanoseconds the store does not keep", func(e *escrow.AuditEvent) { e.Time = e.Time.Add(500 * time.Nanosecond) }},
		{"the time zone", func(e *escrow.AuditEvent) { e.Time = e.Time.In(time.FixedZone("Y", 7200)) }},
		{"the monotonic clock reading", func(e *escrow.AuditEvent) { e.Time = e.Time.Round(0) }},
	}
	base := fullEvent()
	base.Time = base.Time.Truncate(time.Microsecond).Add(100 * time.Nanosecond)
	want := audit.Hash(audit.Genesis(), base)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := base
			tt.change(&e)
			if got := audit.Hash(audit.Genesis(), e); !bytes.Equal(got, want) {
				t.Errorf("changing %s changed the hash", tt.name)
			}
		})
	}
}

func TestGenesisIsFreshZeroes(t *testing.T) {
	g := audit.Genesis()
	if !bytes.Equal(g, make([]byte, 32)) {
		t.Fatalf("Genesis() = %x, want 32 zero bytes", g)
	}
	g[0] = 0xff
	if audit.Genesis()[0] != 0 {
		t.Error("writing into one Genesis() result changed the next")
	}
}

// makeChain returns n correctly chained events, seq 1..n.
func makeChain(n int) []escrow.AuditEvent {
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	actions := []string{escrow.ActionKeyEscrow, escrow.ActionKeyRead, escrow.ActionDeviceReport, escrow.ActionRotateRequest}
	events := make([]escrow.AuditEvent, n)
	prev := audit.Genesis()
	for i := range events {
		e := escrow.AuditEvent{
			Seq:       int64(i + 1),
			Time:      start.Add(time.Duration(i) * 1500 * time.Microsecond),
			Actor:     escrow.Actor{Type: escrow.ActorUser, ID: fmt.Sprintf("u-%d", i%7), Name: fmt.Sprintf("User %d", i%7)},
			Action:    actions[i%len(actions)],
			DeviceID:  fmt.Sprintf("dev-%d", i%13),
			Source:    escrow.SourceAPI,
			Reason:    fmt.Sprintf("ticket %d", i),
			Outcome:   escrow.OutcomeSuccess,
			IP:        "192.0.2.1",
			UserAgent: "keyward-test",
		}
		if i%3 == 0 {
			e.KeyID = fmt.Sprintf("key-%d", i)
		}
		e.Hash = audit.Hash(prev, e)
		prev = e.Hash
		events[i] = e
	}
	return events
}

// iterate yields events the way a store cursor would.
func iterate(events []escrow.AuditEvent) func() (escrow.AuditEvent, bool, error) {
	i := 0
	return func() (escrow.AuditEvent, bool, error) {
		if i == len(events) {
			return escrow.AuditEvent{}, false, nil
		}
		i++
		return events[i-1], true, nil
	}
}

// rehash recomputes the hash of events[i] from its stored predecessor, as a forger with write
// access to the table (but not to every later row) would.
func rehash(events []escrow.AuditEvent, i int) {
	prev := audit.Genesis()
	if i > 0 {
		prev = events[i-1].Hash
	}
	events[i].Hash = audit.Hash(prev, events[i])
}

func TestVerify(t *testing.T) {
	tests := []struct {
		name   string
		tamper func([]escrow.AuditEvent) []escrow.AuditEvent
		want   int64 // events checked
		broken int64 // BrokenError.Seq, or 0 for a good chain
	}{
		{"good chain", func(ev []escrow.AuditEvent) []escrow.AuditEvent { return ev }, 100, 0},
		{"empty chain", func([]escrow.AuditEvent) []escrow.AuditEvent { return nil }, 0, 0},
		{"changed reason at seq 37", func(ev []escrow.AuditEvent) []escrow.AuditEvent {
			ev[36].Reason = "nothing to see"
			return ev
		}, 36, 37},
		{"changed reason and rehashed that row", func(ev []escrow.AuditEvent) []escrow.AuditEvent {
			ev[36].Reason = "nothing to see"
			rehash(ev, 36)
			return ev
		}, 37, 38},
		{"changed outcome", func(ev []escrow.AuditEvent) []escrow.AuditEvent {
			ev[59].Outcome = escrow.OutcomeDenied
			return ev
		}, 59, 60},
		{"changed time", func(ev []escrow.AuditEvent) []escrow.AuditEvent {
			ev[4].Time = ev[4].Time.Add(-time.Hour)
			return ev
		}, 4, 5},
		{"time changed below the stored precision", func(ev []escrow.AuditEvent) []escrow.AuditEvent {
			ev[4].Time = ev[4].Time.Add(999 * time.Nanosecond)
			return ev
		}, 100, 0},
		{"changed hash", func(ev []escrow.AuditEvent) []escrow.AuditEvent {
			ev[79].Hash = bytes.Clone(ev[79].Hash)
			ev[79].Hash[0] ^= 1
			return ev
		}, 79, 80},
		{"changed hash of the first event", func(ev []escrow.AuditEvent) []escrow.AuditEvent {
			ev[0].Hash = nil
			return ev
		}, 0, 1},
		{"changed hash of the last event", func(ev []escrow.AuditEvent) []escrow.AuditEvent {
			ev[99].Hash = bytes.Clone(ev[98].Hash)
			return ev
		}, 99, 100},
		{"deleted event 50", func(ev []escrow.AuditEvent) []escrow.AuditEvent {
			return slices.Delete(ev, 49, 50)
		}, 49, 50},
		{"deleted event 50 and renumbered the rest", func(ev []escrow.AuditEvent) []escrow.AuditEvent {
			ev = slices.Delete(ev, 49, 50)
			for i := 49; i < len(ev); i++ {
				ev[i].Seq--
			}
			return ev
		}, 49, 50},
		{"swapped events 10 and 11", func(ev []escrow.AuditEvent) []escrow.AuditEvent {
			ev[9], ev[10] = ev[10], ev[9]
			return ev
		}, 9, 10},
		{"swapped events 10 and 11 keeping their seq", func(ev []escrow.AuditEvent) []escrow.AuditEvent {
			ev[9], ev[10] = ev[10], ev[9]
			ev[9].Seq, ev[10].Seq = 10, 11
			return ev
		}, 9, 10},
		{"duplicated event 20", func(ev []escrow.AuditEvent) []escrow.AuditEvent {
			return slices.Insert(ev, 20, ev[19])
		}, 20, 21},
		{"inserted a well-hashed event after 30", func(ev []escrow.AuditEvent) []escrow.AuditEvent {
			forged := ev[30]
			forged.Reason = "forged"
			ev = slices.Insert(ev, 30, forged)
			rehash(ev, 30)
			return ev
		}, 31, 32},
		{"seq not starting at 1", func(ev []escrow.AuditEvent) []escrow.AuditEvent {
			return ev[1:]
		}, 0, 1},
		{"seq starting at 0", func(ev []escrow.AuditEvent) []escrow.AuditEvent {
			ev[0].Seq = 0
			return ev
		}, 0, 1},
		// The chain cannot show that rows were cut off its end; that needs an anchor kept
		// elsewhere (the last seq and hash). This case documents the limit.
		{"deleted the last event (undetectable by the chain alone)", func(ev []escrow.AuditEvent) []escrow.AuditEvent {
			return ev[:99]
		}, 99, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events := tt.tamper(makeChain(100))
			checked, err := audit.Verify(iterate(events))
			if checked != tt.want {
				t.Errorf("checked = %d, want %d", checked, tt.want)
			}
			if tt.broken == 0 {
				if err != nil {
					t.Errorf("Verify: %v, want nil", err)
				}
				return
			}
			broken, ok := errors.AsType[*audit.BrokenError](err)
			if !ok {
				t.Fatalf("Verify error = %v, want a *BrokenError", err)
			}
			if broken.Seq != tt.broken {
				t.Errorf("broken at seq %d, want %d (%v)", broken.Seq, tt.broken, err)
			}
			if broken.Seq != checked+1 {
				t.Errorf("broken at seq %d after checking %d events", broken.Seq, checked)
			}
		})
	}
}

func TestBrokenErrorMessage(t *testing.T) {
	tests := []struct {
		name string
		err  *audit.BrokenError
		want string
	}{
		{"hash", &audit.BrokenError{Seq: 17, Problem: "hash does not match the event"}, "audit chain broken at seq 17: hash does not match the event"},
		{"gap", &audit.BrokenError{Seq: 5, Problem: "expected seq 5, found 7"}, "audit chain broken at seq 5: expected seq 5, found 7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		})
	}

	t.Run("from Verify", func(t *testing.T) {
		events := makeChain(10)
		events = slices.Delete(events, 4, 6)
		_, err := audit.Verify(iterate(events))
		if want := "audit chain broken at seq 5: expected seq 5, found 7"; err == nil || err.Error() != want {
			t.Errorf("Verify error = %v, want %q", err, want)
		}
		events = makeChain(20)
		events[16].Detail = "x"
		_, err = audit.Verify(iterate(events))
		if want := "audit chain broken at seq 17: hash does not match the event"; err == nil || err.Error() != want {
			t.Errorf("Verify error = %v, want %q", err, want)
		}
	})
}

func TestVerifyReturnsReadErrors(t *testing.T) {
	errDisk := errors.New("disk on fire")
	events := makeChain(3)
	i := 0
	next := func() (escrow.AuditEvent, bool, error) {
		if i == len(events) {
			return escrow.AuditEvent{}, false, errDisk
		}
		i++
		return events[i-1], true, nil
	}
	checked, err := audit.Verify(next)
	if !errors.Is(err, errDisk) {
		t.Errorf("Verify error = %v, want it to wrap %v", err, errDisk)
	}
	if _, ok := errors.AsType[*audit.BrokenError](err); ok {
		t.Errorf("a read error was reported as a broken chain: %v", err)
	}
	if checked != 3 {
		t.Errorf("checked = %d, want 3", checked)
	}
}

func BenchmarkHash(b *testing.B) {
	e := fullEvent()
	prev := audit.Genesis()
	b.ReportAllocs()
	for b.Loop() {
		audit.Hash(prev, e)
	}
}
