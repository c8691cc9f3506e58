package store_test

import (
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

func TestImport(t *testing.T) {
	e := newEnv(t)
	en := e.enroll("LT-0042", "alice@example.com")
	bad := "235818-357951-253979-013365-241120-245575-342914-591911" // last block not a multiple of 11
	recs := []escrow.ImportRecord{
		{Position: "line 2", Hostname: "lt-0042", KeyID: "{" + strings.ToLower(xts128.keyID) + "}", Password: strings.ReplaceAll(xts128.password, "-", "")},
		{Position: "line 3", Hostname: "LT-0099", KeyID: cbc128.keyID, Password: cbc128.password, OwnerUPN: "Bob@Example.com",
			CreatedAt: time.Date(2024, 7, 19, 4, 9, 0, 0, time.UTC)},
		{Position: "line 4", Hostname: "LT-0099", KeyID: togo.keyID, Password: togo.password, VolumeType: escrow.VolumeRemovable},
		{Position: "line 5", Hostname: "LT-0100", KeyID: genSample(1).keyID, Password: bad},
		{Position: "line 6", Hostname: "LT-0100", KeyID: "not-a-guid", Password: genSample(2).password},
		{Position: "line 7", Hostname: "", KeyID: genSample(3).keyID, Password: genSample(3).password},
	}
	want := []escrow.ImportOutcome{escrow.ImportAdded, escrow.ImportAdded, escrow.ImportAdded, escrow.ImportInvalid, escrow.ImportInvalid, escrow.ImportInvalid}

	// A dry run says what would happen and stores nothing, not even an event.
	before := e.countEvents(escrow.AuditFilter{})
	dry, err := e.db.Import(e.ctx, cliOrigin, "csv keys.csv", recs, true)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range dry {
		if r.Outcome != want[i] || r.Position != recs[i].Position {
			t.Errorf("dry run %d: %+v, want %s", i, r, want[i])
		}
	}
	if !dry[1].NewDevice || dry[0].NewDevice || dry[0].DeviceID != en.DeviceID {
		t.Errorf("dry run devices: %+v", dry[:3])
	}
	if n := e.countEvents(escrow.AuditFilter{}); n != before {
		t.Fatalf("a dry run appended %d events", n-before)
	}
	if keys := e.keys(escrow.KeyFilter{}); len(keys) != 0 {
		t.Fatalf("a dry run stored %d keys", len(keys))
	}

	got, err := e.db.Import(e.ctx, cliOrigin, "csv keys.csv", recs, false)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range got {
		if r.Outcome != want[i] {
			t.Errorf("record %d: %+v, want %s", i, r, want[i])
		}
		if containsSecret([]byte(r.Message), recs[i].Password) || (recs[i].Password != "" && strings.Contains(r.Message, recs[i].Password[:6])) {
			t.Errorf("record %d: message %q repeats the password", i, r.Message)
		}
	}
	for i, field := range map[int]string{3: "recoveryPassword: block 8", 4: "keyId:", 5: "hostname:"} {
		if !strings.HasPrefix(got[i].Message, field) {
			t.Errorf("record %d: message %q, want it to name %q", i, got[i].Message, field)
		}
	}
	// Attached to the enrolled device by its name, whatever the case; the others to one new
	// device record, with no agent yet: pending, as a device that never reported.
	if got[0].DeviceID != en.DeviceID || got[1].DeviceID == "" || got[2].DeviceID != got[1].DeviceID || !got[1].NewDevice || got[2].NewDevice {
		t.Fatalf("devices: %+v", got[:3])
	}
	newDev := e.device(got[1].DeviceID)
	if newDev.Name != "LT-0099" || newDev.OwnerUPN != "bob@example.com" || newDev.Status.Status != escrow.StatusPending {
		t.Errorf("new device: %s owner %q status %s", newDev.Name, newDev.OwnerUPN, newDev.Status.Status)
	}
	k := e.key(got[1].DeviceID, cbc128.keyID)
	if k.Status != escrow.KeyActive || !k.CreatedAt.Equal(recs[1].CreatedAt) {
		t.Errorf("imported key: %+v", k)
	}
	// Found by the eight characters the recovery screen shows, and viewed like an escrowed key.
	if keys := e.keys(escrow.KeyFilter{KeyIDPrefix: xts128.keyID[:8]}); len(keys) != 1 || keys[0].DeviceID != en.DeviceID {
		t.Fatalf("lookup by %s: %+v", xts128.keyID[:8], keys)
	}
	d := e.disclose(got[1].DeviceID)
	held := map[string]string{}
	for _, k := range d.Keys {
		held[k.KeyID] = k.Material
	}
	if held[cbc128.keyID] != cbc128.password || held[togo.keyID] != togo.password || len(held) != 2 {
		t.Errorf("disclosed %d keys, not the imported ones", len(held))
	}
	if d := e.disclose(en.DeviceID); len(d.Keys) != 1 || d.Keys[0].Material != xts128.password {
		t.Errorf("the enrolled device's import: %d keys", len(d.Keys))
	}
	evs := e.events(escrow.AuditFilter{Action: escrow.ActionKeyImport})
	if len(evs) != 3 {
		t.Fatalf("%d key.import events, want 3", len(evs))
	}
	for _, ev := range evs {
		if ev.Source != escrow.SourceCLI || !strings.Contains(ev.Detail, "csv keys.csv") || ev.KeyID == "" || ev.DeviceID == "" {
			t.Errorf("event %+v", ev)
		}
	}
	if !strings.Contains(evs[1].Detail, "new device record LT-0099") {
		t.Errorf("the first key of the new device: %q", evs[1].Detail)
	}

	// Again: nothing changes. A different password under a held key ID is a conflict.
	recs = append(recs, escrow.ImportRecord{Position: "line 8", Hostname: "LT-0042", KeyID: xts128.keyID, Password: genSample(4).password})
	before = e.countEvents(escrow.AuditFilter{})
	again, err := e.db.Import(e.ctx, cliOrigin, "csv keys.csv", recs, false)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range again[:3] {
		if r.Outcome != escrow.ImportUnchanged || r.DeviceID != got[i].DeviceID || r.NewDevice {
			t.Errorf("second run, record %d: %+v", i, r)
		}
	}
	if again[6].Outcome != escrow.ImportConflict {
		t.Errorf("a different password: %+v", again[6])
	}
	if n := e.countEvents(escrow.AuditFilter{}); n != before {
		t.Errorf("a second run appended %d events", n-before)
	}
	if d := e.disclose(en.DeviceID); d.Keys[0].Material != xts128.password {
		t.Error("a conflicting import replaced the held password")
	}
}

// An agent that enrolls with an imported device's name takes the record over only once it
// escrows the same password under one of its key IDs: a name alone proves nothing.
func TestImportedDeviceTakenOver(t *testing.T) {
	e := newEnv(t)
	got, err := e.db.Import(e.ctx, cliOrigin, "csv keys.csv", []escrow.ImportRecord{
		{Position: "line 2", Hostname: "LT-0077", KeyID: xts128.keyID, Password: xts128.password},
		{Position: "line 3", Hostname: "LT-0077", KeyID: togo.keyID, Password: togo.password, VolumeType: escrow.VolumeRemovable},
	}, false)
	if err != nil || got[0].Outcome != escrow.ImportAdded {
		t.Fatalf("%+v %v", got, err)
	}
	imported := got[0].DeviceID

	// A planted device with the name and a made-up password under the key ID takes nothing.
	planted := e.enroll("lt-0077", "mallory@example.com")
	e.escrowPassword(planted, osVolume, sample{xts128.keyID, genSample(5).password})
	if d := e.device(imported); d.Retired() {
		t.Fatal("a device with the same name but another password took the record over")
	}
	if n := len(e.disclose(planted.DeviceID).Keys); n != 1 {
		t.Fatalf("the planted device holds %d keys", n)
	}

	agent := e.enroll("LT-0077", "alice@example.com")
	e.escrowPassword(agent, osVolume, xts128)
	if d := e.device(imported); !d.Retired() || !strings.Contains(d.RetireReason, agent.DeviceID) {
		t.Fatalf("imported record: retired %v, %q", d.RetiredAt, d.RetireReason)
	}
	held := map[string]string{}
	for _, k := range e.disclose(agent.DeviceID).Keys {
		held[k.KeyID] = k.Material
	}
	if len(held) != 2 || held[xts128.keyID] != xts128.password || held[togo.keyID] != togo.password {
		t.Fatalf("the agent's device holds %d keys", len(held))
	}
	if n := len(e.disclose(imported).Keys); n != 0 {
		t.Errorf("the retired record still discloses %d keys", n)
	}
	if evs := e.events(escrow.AuditFilter{Action: escrow.ActionDeviceRetire, DeviceID: imported}); len(evs) != 1 || !strings.Contains(evs[0].Detail, "1 other keys moved") {
		t.Errorf("events %+v", evs)
	}
	// Importing again attaches to the agent's device, where the keys are already held.
	again, err := e.db.Import(e.ctx, cliOrigin, "csv keys.csv", []escrow.ImportRecord{{Position: "line 3", Hostname: "LT-0077", KeyID: togo.keyID, Password: togo.password}}, false)
	if err != nil || again[0].Outcome != escrow.ImportUnchanged || again[0].DeviceID != agent.DeviceID {
		t.Fatalf("a second import: %+v %v", again, err)
	}
}
