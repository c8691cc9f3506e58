package audit_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/escrow"
)

var testKey = bytes.Repeat([]byte{0x42}, audit.KeySize)

// TestKeyedGolden pins the keyed chain's MAC and the head's MAC. If this test fails, the change
// is wrong: every keyed audit trail depends on these bytes. Do not update the literals (they
// were computed apart from this code, with Python's hmac and hashlib over the canonical bytes).
func TestKeyedGolden(t *testing.T) {
	const wantMAC = "41748a18e20441c29515691c9047912c8c4ba9b9b1c3cd96fc86c0c535bd7475"
	const wantHead = "0f9ddfa65320882a8f9c425feb457bb363ddd584a428822aff111f4993d12dd8"
	e := fullEvent()
	mac := audit.MAC(testKey, audit.Genesis(), e)
	if got := hex.EncodeToString(mac); got != wantMAC {
		t.Errorf("MAC(key, Genesis, e) = %s, want %s", got, wantMAC)
	}
	if got := hex.EncodeToString(audit.HeadMAC(testKey, 17, mac)); got != wantHead {
		t.Errorf("HeadMAC = %s, want %s", got, wantHead)
	}
	if bytes.Equal(mac, audit.Hash(audit.Genesis(), e)) {
		t.Error("the keyed hash equals the plain one")
	}
	if bytes.Equal(mac, audit.MAC(bytes.Repeat([]byte{0x43}, audit.KeySize), audit.Genesis(), e)) {
		t.Error("the keyed hash does not depend on the key")
	}
}

// keyedChain returns n events of which the first plain are plain SHA-256 and the rest keyed
// under testKey, with the key (switch-over after plain) and the head a store would keep.
func keyedChain(n, plain int) ([]escrow.AuditEvent, audit.Key, audit.Head) {
	events := makeChain(n)
	k := audit.Key{MAC: testKey, SwitchSeq: int64(plain), SwitchHash: audit.Genesis()}
	if plain > 0 {
		k.SwitchHash = events[plain-1].Hash
	}
	for i := plain; i < n; i++ {
		prev := audit.Genesis()
		if i > 0 {
			prev = events[i-1].Hash
		}
		events[i].Hash = audit.MAC(testKey, prev, events[i])
	}
	h := audit.Head{Seq: int64(n), Hash: audit.Genesis()}
	if n > 0 {
		h.Hash = events[n-1].Hash
	}
	h.MAC = audit.HeadMAC(testKey, h.Seq, h.Hash)
	return events, k, h
}

func TestVerifyKeyed(t *testing.T) {
	// The forger can write every row and recompute SHA-256, but does not have testKey.
	plainRehash := func(ev []escrow.AuditEvent, from int) {
		for i := from; i < len(ev); i++ {
			prev := audit.Genesis()
			if i > 0 {
				prev = ev[i-1].Hash
			}
			ev[i].Hash = audit.Hash(prev, ev[i])
		}
	}
	tests := []struct {
		name      string
		plain     int
		tamper    func(ev []escrow.AuditEvent, h *audit.Head) []escrow.AuditEvent
		checked   int64
		broken    int64 // BrokenError.Seq, or 0 for a good chain
		truncated bool
		says      string
	}{
		{name: "keyed from the start", tamper: nil, checked: 20},
		{name: "plain up to the switch-over, keyed after", plain: 8, checked: 20},
		{name: "plain throughout, head at the switch-over", plain: 20, checked: 20},
		{name: "empty chain", plain: -1, checked: 0},
		{name: "keyed event rewritten and re-hashed with SHA-256", plain: 8,
			tamper: func(ev []escrow.AuditEvent, h *audit.Head) []escrow.AuditEvent {
				ev[11].Reason = "nothing to see"
				plainRehash(ev, 11)
				h.Hash = ev[len(ev)-1].Hash
				return ev
			}, checked: 11, broken: 12, says: "not the MAC"},
		{name: "plain event rewritten and the plain part re-hashed", plain: 8,
			tamper: func(ev []escrow.AuditEvent, h *audit.Head) []escrow.AuditEvent {
				ev[2].Actor.Name = "someone else"
				plainRehash(ev[:8], 2)
				return ev
			}, checked: 7, broken: 8, says: "written before the chain was keyed, were rewritten"},
		{name: "last events deleted and the head moved back", plain: 8,
			tamper: func(ev []escrow.AuditEvent, h *audit.Head) []escrow.AuditEvent {
				ev = ev[:17]
				h.Seq, h.Hash = 17, ev[16].Hash
				return ev
			}, checked: 17, broken: 18, truncated: true, says: "cut off"},
		{name: "last events deleted, head left", plain: 8,
			tamper:  func(ev []escrow.AuditEvent, h *audit.Head) []escrow.AuditEvent { return ev[:15] },
			checked: 15, broken: 16, truncated: true, says: "cut off: the head is at seq 20"},
		{name: "keyed events deleted back into the plain part", plain: 8,
			tamper: func(ev []escrow.AuditEvent, h *audit.Head) []escrow.AuditEvent {
				ev = ev[:5]
				h.Seq, h.Hash = 5, ev[4].Hash
				return ev
			}, checked: 5, broken: 6, truncated: true, says: "cut off"},
		{name: "head hash zeroed", plain: 8,
			tamper: func(ev []escrow.AuditEvent, h *audit.Head) []escrow.AuditEvent {
				h.Hash = make([]byte, 32)
				return ev
			}, checked: 20, broken: 21, truncated: true, says: "does not authenticate"},
		{name: "head MAC removed", plain: 8,
			tamper: func(ev []escrow.AuditEvent, h *audit.Head) []escrow.AuditEvent {
				h.MAC = nil
				return ev
			}, checked: 20, broken: 21, truncated: true, says: "does not authenticate"},
		{name: "event appended behind the head's back", plain: 8,
			tamper: func(ev []escrow.AuditEvent, h *audit.Head) []escrow.AuditEvent {
				_, _, old := keyedChain(19, 8)
				*h = old
				return ev
			}, checked: 19, broken: 20, says: "beyond the chain head"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := 20
			if tt.plain < 0 {
				n, tt.plain = 0, 0
			}
			ev, k, h := keyedChain(n, tt.plain)
			if tt.tamper != nil {
				ev = tt.tamper(ev, &h)
			}
			checked, err := audit.VerifyKeyed(k, h, iterate(ev))
			if checked != tt.checked {
				t.Errorf("checked %d, want %d", checked, tt.checked)
			}
			if tt.broken == 0 {
				if err != nil {
					t.Fatalf("VerifyKeyed: %v", err)
				}
				return
			}
			var b *audit.BrokenError
			if !errors.As(err, &b) {
				t.Fatalf("VerifyKeyed: %v, want a BrokenError", err)
			}
			if b.Seq != tt.broken || b.Truncated != tt.truncated || !strings.Contains(b.Problem, tt.says) {
				t.Errorf("got %+v, want seq %d, truncated %v, saying %q", b, tt.broken, tt.truncated, tt.says)
			}
		})
	}
}

// TestPlainVerifyAcceptsWhatTheKeyCatches shows why the chain is keyed: the plain walk passes a
// chain whose events were rewritten and re-hashed by someone with the database alone.
func TestPlainVerifyAcceptsWhatTheKeyCatches(t *testing.T) {
	ev := makeChain(10)
	ev[4].Reason = "rewritten"
	for i := 4; i < len(ev); i++ {
		rehash(ev, i)
	}
	if _, err := audit.Verify(iterate(ev)); err != nil {
		t.Fatalf("the plain chain's own check: %v", err)
	}
	k := audit.Key{MAC: testKey, SwitchSeq: 0, SwitchHash: audit.Genesis()}
	h := audit.Head{Seq: 10, Hash: ev[9].Hash}
	h.MAC = audit.HeadMAC(bytes.Repeat([]byte{1}, audit.KeySize), h.Seq, h.Hash) // not testKey
	if _, err := audit.VerifyKeyed(k, h, iterate(ev)); err == nil {
		t.Fatal("a chain made without the key verified as keyed")
	}
}

// BenchmarkAppendMACs is what an append computes: the head's check, the event's MAC and the new
// head's MAC.
func BenchmarkAppendMACs(b *testing.B) {
	e := fullEvent()
	k := audit.Key{MAC: testKey}
	h := audit.Head{Seq: 16, Hash: audit.Genesis()}
	h.MAC = audit.HeadMAC(testKey, h.Seq, h.Hash)
	b.ReportAllocs()
	for b.Loop() {
		if !k.CheckHead(h) {
			b.Fatal("head does not authenticate")
		}
		mac := audit.MAC(testKey, h.Hash, e)
		audit.HeadMAC(testKey, e.Seq, mac)
	}
}
