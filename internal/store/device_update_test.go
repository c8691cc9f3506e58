package store_test

import (
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

func ptr[T any](v T) *T { return &v }

// TestUpdateDevice sets owner and tags in one transaction with one device.update event holding
// the old and new values; a change to the same values records nothing, bad input stores
// nothing, and an unknown device is a denied event. Tag scopes follow at once.
func TestUpdateDevice(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	en := e.enroll("LT-0042", "alice@example.com")
	lab := escrow.Scope{Tags: []string{"lab"}}
	inScope := func(s escrow.Scope) int {
		t.Helper()
		ds, _, err := e.db.ListDevices(e.ctx, escrow.DeviceFilter{Scope: s})
		if err != nil {
			t.Fatal(err)
		}
		return len(ds)
	}
	if inScope(lab) != 0 {
		t.Fatal("an untagged device is in a tag scope")
	}

	for _, ch := range []escrow.DeviceChange{
		{Tags: ptr([]string{"lab", "Lab"})},
		{OwnerUPN: ptr("ſam@example.com"), Tags: ptr([]string{"lab"})},
		{Tags: ptr(make([]string, 33))},
		{},
	} {
		_, err := e.db.UpdateDevice(e.ctx, adminOrigin, en.DeviceID, ch)
		wantCode(t, err, escrow.CodeInvalid)
	}
	_, err := e.db.UpdateDevice(e.ctx, adminOrigin, "00000000-0000-4000-8000-000000000000", escrow.DeviceChange{Tags: ptr([]string{"lab"})})
	wantCode(t, err, escrow.CodeNotFound)
	if ev := e.events(escrow.AuditFilter{Action: escrow.ActionDeviceUpdate}); len(ev) != 1 || ev[0].Outcome != escrow.OutcomeDenied {
		t.Fatalf("device.update events after refusals: %+v, want the unknown device's denial only", ev)
	}
	if d := e.device(en.DeviceID); d.OwnerUPN != "alice@example.com" || len(d.Tags) != 0 {
		t.Fatalf("refused changes stored %+v", d.Device)
	}

	d, err := e.db.UpdateDevice(e.ctx, adminOrigin, en.DeviceID, escrow.DeviceChange{OwnerUPN: ptr("Bob@Example.com"), Tags: ptr([]string{"lab", "berlin"})})
	if err != nil {
		t.Fatal(err)
	}
	if d.OwnerUPN != "bob@example.com" || strings.Join(d.Tags, ",") != "berlin,lab" {
		t.Fatalf("UpdateDevice answered %+v", d.Device)
	}
	if got := e.device(en.DeviceID); got.OwnerUPN != "bob@example.com" || strings.Join(got.Tags, ",") != "berlin,lab" {
		t.Fatalf("stored %+v", got.Device)
	}
	ev := e.events(escrow.AuditFilter{Action: escrow.ActionDeviceUpdate, Outcome: string(escrow.OutcomeSuccess)})
	if len(ev) != 1 || ev[0].DeviceID != en.DeviceID || ev[0].Actor != adminOrigin.Actor ||
		ev[0].Detail != `device LT-0042: ownerUpn "alice@example.com" -> "bob@example.com"; tags [] -> [berlin lab]` {
		t.Fatalf("device.update events %+v", ev)
	}
	if inScope(lab) != 1 || inScope(escrow.Scope{OwnerUPN: "bob@example.com"}) != 1 || inScope(escrow.Scope{OwnerUPN: "alice@example.com"}) != 0 {
		t.Error("scopes do not follow the new owner and tags")
	}

	if _, err := e.db.UpdateDevice(e.ctx, adminOrigin, en.DeviceID, escrow.DeviceChange{OwnerUPN: ptr("bob@example.com"), Tags: ptr([]string{"berlin", "lab"})}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.UpdateDevice(e.ctx, adminOrigin, en.DeviceID, escrow.DeviceChange{OwnerUPN: ptr(""), Tags: ptr([]string{})}); err != nil {
		t.Fatal(err)
	}
	ev = e.events(escrow.AuditFilter{Action: escrow.ActionDeviceUpdate, Outcome: string(escrow.OutcomeSuccess)})
	if len(ev) != 2 || ev[1].Detail != `device LT-0042: ownerUpn "bob@example.com" -> ""; tags [berlin lab] -> []` {
		t.Fatalf("device.update events after a no-op and a clear: %+v", ev)
	}
	if inScope(lab) != 0 {
		t.Error("a device whose tags were cleared stays in the tag scope")
	}
}

// TestSharedKeyIDAndDispute: a key ID escrowed by a second device is named in the escrow
// event, the key listing and the key-ID search tell the holders apart, and a disputed device
// leaves every self-service scope until the dispute is cleared.
func TestSharedKeyIDAndDispute(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	real := e.enroll("LT-0042", "alice@example.com")
	e.escrowPassword(real, osVolume, xts128)
	e.clock.Advance(time.Hour)
	planted := e.enroll("LT-ALICE", "alice@example.com")
	e.escrowPassword(planted, osVolume, sample{xts128.keyID, cbc128.password})

	ev := e.events(escrow.AuditFilter{Action: escrow.ActionKeyEscrow})
	if len(ev) != 2 || strings.Contains(ev[0].Detail, "also escrowed") ||
		!strings.HasSuffix(ev[1].Detail, "; key ID also escrowed by device LT-0042 ("+real.DeviceID+", serial SN-LT-0042)") {
		t.Fatalf("key.escrow events %+v", ev)
	}
	if _, err := e.db.UpdateDevice(e.ctx, adminOrigin, real.DeviceID, escrow.DeviceChange{Tags: ptr([]string{"lab"})}); err != nil {
		t.Fatal(err)
	}
	keys := e.keys(escrow.KeyFilter{KeyIDPrefix: xts128.keyID[:8]})
	if len(keys) != 2 || keys[0].DeviceID != real.DeviceID || keys[0].DeviceSerial != "SN-LT-0042" || keys[1].DeviceSerial != "SN-LT-ALICE" ||
		!keys[1].DeviceEnrolledAt.Equal(keys[0].DeviceEnrolledAt.Add(time.Hour)) ||
		len(keys[0].SharedWith) != 1 || keys[0].SharedWith[0].ID != planted.DeviceID || keys[0].SharedWith[0].Name != "LT-ALICE" ||
		len(keys[1].SharedWith) != 1 || keys[1].SharedWith[0].ID != real.DeviceID {
		t.Fatalf("keys with the shared ID: %+v", keys)
	}
	scoped := e.keys(escrow.KeyFilter{Scope: escrow.Scope{Tags: []string{"lab"}}, KeyIDPrefix: xts128.keyID})
	if len(scoped) != 1 || len(scoped[0].SharedWith) != 0 || scoped[0].SharedOutside != 1 {
		t.Fatalf("a tag scope sees %+v, want its key with one holder outside the scope", scoped)
	}
	found, _, err := e.db.SearchDevices(e.ctx, adminOrigin, escrow.DeviceFilter{Scope: allScope}, xts128.keyID[:8])
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 2 || len(found[0].MatchedKeys) != 1 || found[0].MatchedKeys[0].KeyID != xts128.keyID || found[0].MatchedKeys[0].CreatedAt.IsZero() ||
		len(found[1].MatchedKeys) != 1 {
		t.Fatalf("search by key ID found %+v", found)
	}

	self := escrow.Scope{OwnerUPN: "alice@example.com", Undisputed: true}
	selfKeys := func() int { return len(e.keys(escrow.KeyFilter{Scope: self, KeyIDPrefix: xts128.keyID})) }
	selfDevices := func() int {
		ds, _, err := e.db.ListDevices(e.ctx, escrow.DeviceFilter{Scope: self})
		if err != nil {
			t.Fatal(err)
		}
		return len(ds)
	}
	if selfKeys() != 2 || selfDevices() != 2 {
		t.Fatal("self-service does not see both devices before the dispute")
	}
	_, err = e.db.UpdateDevice(e.ctx, adminOrigin, planted.DeviceID, escrow.DeviceChange{Disputed: ptr(true)})
	wantCode(t, err, escrow.CodeInvalid)
	d, err := e.db.UpdateDevice(e.ctx, adminOrigin, planted.DeviceID, escrow.DeviceChange{Disputed: ptr(true), DisputeReason: "not ours"})
	if err != nil {
		t.Fatal(err)
	}
	if !d.Disputed() || d.DisputedBy != adminOrigin.Actor.Name || d.DisputeReason != "not ours" || !d.DisputedAt.Equal(e.clock.Now()) {
		t.Fatalf("disputed device %+v", d.Device)
	}
	if selfKeys() != 1 || selfDevices() != 1 {
		t.Fatal("self-service still sees the disputed device")
	}
	_, err = e.db.Disclose(e.ctx, adminOrigin, planted.DeviceID, asAdmin("forgotten PIN"), func(d escrow.Device, _ escrow.Settings) bool { return self.Allows(d) })
	wantCode(t, err, escrow.CodeForbidden)
	if keys := e.keys(escrow.KeyFilter{KeyIDPrefix: xts128.keyID}); len(keys) != 2 || !keys[1].DeviceDisputed || !keys[0].SharedWith[0].Disputed {
		t.Fatalf("staff listing after the dispute: %+v", keys)
	}
	if _, err := e.db.UpdateDevice(e.ctx, adminOrigin, planted.DeviceID, escrow.DeviceChange{Disputed: ptr(true), DisputeReason: "again"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.UpdateDevice(e.ctx, adminOrigin, planted.DeviceID, escrow.DeviceChange{Disputed: ptr(false)}); err != nil {
		t.Fatal(err)
	}
	if selfKeys() != 2 || e.device(planted.DeviceID).Disputed() {
		t.Fatal("clearing the dispute did not bring the device back")
	}
	disputes := e.events(escrow.AuditFilter{Action: escrow.ActionDeviceDispute})
	if len(disputes) != 2 || disputes[0].Reason != "not ours" || !strings.Contains(disputes[1].Detail, "dispute cleared (was: not ours)") {
		t.Fatalf("device.dispute events %+v", disputes)
	}

	// A person's own listing never tells of other people's devices holding the key ID.
	bob := e.enroll("LT-BOB", "bob@example.com")
	e.escrowPassword(bob, osVolume, sample{xts128.keyID, togo.password})
	own := e.keys(escrow.KeyFilter{Scope: escrow.Scope{OwnerUPN: "bob@example.com", Undisputed: true}, KeyIDPrefix: xts128.keyID})
	if len(own) != 1 || len(own[0].SharedWith) != 0 || own[0].SharedOutside != 0 {
		t.Fatalf("bob's own listing: %+v", own)
	}
}
