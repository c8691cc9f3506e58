package store_test

import (
	"database/sql"
	"errors"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/escrow"
)

// activity writes a log of several events, a key.read in its middle, and returns the events.
func (e *env) activity() []escrow.AuditEvent {
	e.t.Helper()
	en := e.enroll("LT-0042", "")
	e.escrowPassword(en, osVolume, xts128)
	e.disclose(en.DeviceID)
	e.escrowPassword(en, dataVolume, cbc128)
	e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID)}})
	return e.events(escrow.AuditFilter{})
}

// rehashPlain gives events[from:] plain SHA-256 hashes chained from events[from-1], writes
// them and returns the last hash: what anyone who can write the database can do.
func (e *env) rehashPlain(raw *sql.DB, events []escrow.AuditEvent, from int) []byte {
	e.t.Helper()
	prev := audit.Genesis()
	if from > 0 {
		prev = events[from-1].Hash
	}
	for i := from; i < len(events); i++ {
		events[i].Hash = audit.Hash(prev, events[i])
		e.exec(raw, `UPDATE audit_events SET hash = $1 WHERE seq = $2`, events[i].Hash, events[i].Seq)
		prev = events[i].Hash
	}
	return prev
}

func (e *env) verifyBroken() *audit.BrokenError {
	e.t.Helper()
	_, err := e.db.VerifyAudit(e.ctx)
	broken, ok := errors.AsType[*audit.BrokenError](err)
	if !ok {
		e.t.Fatalf("VerifyAudit = %v, want an *audit.BrokenError", err)
	}
	return broken
}

// TestAuditChainNeedsTheKey: each of these was accepted as intact while the chain was plain
// SHA-256, by whoever could write the database.
func TestAuditChainNeedsTheKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// tamper changes the database behind the store's back and returns the seq that
		// VerifyAudit must name and whether it must say that the end was cut off.
		tamper    func(e *env, raw *sql.DB, events []escrow.AuditEvent) (seq int64, cut bool)
		wantWords string
	}{
		{
			name: "event rewritten and the rest re-hashed",
			tamper: func(e *env, raw *sql.DB, events []escrow.AuditEvent) (int64, bool) {
				i := 2
				events[i].Reason = "routine check"
				e.exec(raw, `UPDATE audit_events SET reason = $1 WHERE seq = $2`, events[i].Reason, events[i].Seq)
				last := e.rehashPlain(raw, events, i)
				e.exec(raw, `UPDATE audit_head SET hash = $1`, last)
				return events[i].Seq, false
			},
			wantWords: "hash does not match",
		},
		{
			name: "last events deleted and the head moved back",
			tamper: func(e *env, raw *sql.DB, events []escrow.AuditEvent) (int64, bool) {
				keep := events[len(events)-3]
				e.exec(raw, `DELETE FROM audit_events WHERE seq > $1`, keep.Seq)
				e.exec(raw, `UPDATE audit_head SET seq = $1, hash = $2`, keep.Seq, keep.Hash)
				return keep.Seq + 1, true
			},
			wantWords: "cut off",
		},
		{
			name: "head's hash zeroed",
			tamper: func(e *env, raw *sql.DB, events []escrow.AuditEvent) (int64, bool) {
				e.exec(raw, `UPDATE audit_head SET hash = $1`, make([]byte, 32))
				return int64(len(events)) + 1, true
			},
			wantWords: "does not authenticate",
		},
		{
			name: "head's MAC removed",
			tamper: func(e *env, raw *sql.DB, events []escrow.AuditEvent) (int64, bool) {
				e.exec(raw, `UPDATE audit_head SET mac = NULL`)
				return int64(len(events)) + 1, true
			},
			wantWords: "does not authenticate",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			events := e.activity()
			if n, err := e.db.VerifyAudit(e.ctx); err != nil || n != int64(len(events)) {
				t.Fatalf("VerifyAudit before = %d, %v", n, err)
			}
			seq, cut := tt.tamper(e, e.raw(), events)
			broken := e.verifyBroken()
			if broken.Seq != seq || broken.Truncated != cut || !strings.Contains(broken.Problem, tt.wantWords) {
				t.Fatalf("VerifyAudit: %v (truncated %v); want seq %d, truncated %v, saying %q", broken, broken.Truncated, seq, cut, tt.wantWords)
			}
			// A server that goes on writing must not build a valid chain on the forged head:
			// the write fails with its event, and the damage stays visible.
			err := e.db.Record(e.ctx, cliOrigin.Event(escrow.ActionSettingsUpdate, escrow.OutcomeSuccess))
			if broken.Truncated && err == nil {
				t.Fatal("an event was appended to a head that does not authenticate")
			}
			if again := e.verifyBroken(); again.Seq != broken.Seq {
				t.Fatalf("after a write: %v, first %v", again, broken)
			}
		})
	}
}

// toPlainFormat rewrites the database as the versions before the keyed chain left it: every
// event hashed with plain SHA-256, the head unauthenticated and a check value of the first
// version, which carries no audit key. (The audit_head.mac column of migration 0008 stays, NULL,
// as the migration leaves it on an upgraded database.)
func (e *env) toPlainFormat(raw *sql.DB) []escrow.AuditEvent {
	e.t.Helper()
	events := e.events(escrow.AuditFilter{})
	last := e.rehashPlain(raw, events, 0)
	e.exec(raw, `UPDATE audit_head SET seq = $1, hash = $2, mac = NULL`, len(events), last)
	check, err := mustSealer(e.t, e.master).NewCheck()
	if err != nil {
		e.t.Fatal(err)
	}
	e.exec(raw, `UPDATE seal_check SET ciphertext = $1, wrapped_key = $2`, check.Ciphertext, check.WrappedKey)
	return events
}

func TestUpgradedAuditChainVerifies(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.activity()
	raw := e.raw()
	plain := e.toPlainFormat(raw)
	if len(plain) < 5 {
		t.Fatalf("only %d events", len(plain))
	}

	// The first start with the master key keys the chain from the head on.
	e.db = e.open()
	n, err := e.db.VerifyAudit(e.ctx)
	if err != nil || n != int64(len(plain)) {
		t.Fatalf("VerifyAudit of the upgraded database = %d, %v; want %d, nil", n, err, len(plain))
	}
	en := e.enroll("LT-AFTER", "")
	e.escrowPassword(en, osVolume, genSample(7))
	all := e.events(escrow.AuditFilter{})
	if n, err := e.db.VerifyAudit(e.ctx); err != nil || n != int64(len(all)) || len(all) <= len(plain) {
		t.Fatalf("VerifyAudit after more events = %d, %v; want %d", n, err, len(all))
	}
	for _, ev := range all[len(plain):] {
		if prev := all[ev.Seq-2].Hash; string(ev.Hash) == string(audit.Hash(prev, ev)) {
			t.Fatalf("event %d after the upgrade has a plain SHA-256 hash", ev.Seq)
		}
	}
	// Reopening keeps the key and the switch-over point.
	e.db = e.open()
	if n, err := e.db.VerifyAudit(e.ctx); err != nil || n != int64(len(all)) {
		t.Fatalf("VerifyAudit after reopening = %d, %v", n, err)
	}

	// The events from before the switch-over stay protected: rewritten and re-hashed as the
	// plain chain they are, they no longer lead to the hash recorded at the switch-over.
	plain[1].Actor.Name = "someone else"
	e.exec(raw, `UPDATE audit_events SET actor_name = $1 WHERE seq = $2`, plain[1].Actor.Name, plain[1].Seq)
	e.rehashPlain(raw, plain, 1)
	broken := e.verifyBroken()
	if broken.Seq != int64(len(plain)) || !strings.Contains(broken.Problem, "before the chain was keyed") {
		t.Fatalf("VerifyAudit after rewriting a plain event: %v", broken)
	}
}

// TestCheckValueRemovedIsRefused: without the check value a start would key the chain anew
// from wherever its head now is, turning whatever was forged into the plain part.
func TestCheckValueRemovedIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.activity()
	e.exec(e.raw(), `DELETE FROM seal_check`)
	if _, err := e.openWith(e.master); err == nil || !strings.Contains(err.Error(), "no master key check value") {
		t.Fatalf("open without a check value: %v", err)
	}
}

func TestAuditKeySurvivesMasterKeyRotation(t *testing.T) {
	t.Parallel()
	e, cli, m, _, _ := rotatedEnv(t, 1, 3)
	cli.rewrap(2)
	// Only the new key is left: the chain written under the old one still verifies, and the
	// store goes on with the same audit key.
	after := e.with(m.newOnly)
	if n, err := after.db.VerifyAudit(e.ctx); err != nil || n == 0 {
		t.Fatalf("VerifyAudit with the new master key alone = %d, %v", n, err)
	}
	if err := after.db.Record(e.ctx, cliOrigin.Event(escrow.ActionSettingsUpdate, escrow.OutcomeSuccess)); err != nil {
		t.Fatal(err)
	}
	if _, err := after.db.VerifyAudit(e.ctx); err != nil {
		t.Fatalf("VerifyAudit after appending under the new master key: %v", err)
	}
}
