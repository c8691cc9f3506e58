package store_test

import (
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/store"
)

// TestSeedStoresWhatTheServicesWould seeds one device of each kind and reads it back through
// the services: the statuses the rules give, keys that open under their rows, devices whose
// tokens work, and an audit chain that verifies.
func TestSeedStoresWhatTheServicesWould(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	now := e.clock.Now()
	os := func(protection escrow.ProtectionStatus, encryption escrow.EncryptionStatus, keys ...store.SeedKey) store.SeedVolume {
		return store.SeedVolume{ID: osVolume, MountPoint: "C:", Type: escrow.VolumeOperatingSystem, Protection: protection, Encryption: encryption,
			Protectors: []escrow.Protector{{KeyID: "0A1B2C3D-0000-4000-8000-000000000001", Type: escrow.ProtectorTPM}}, Keys: keys}
	}
	key := func(s sample) store.SeedKey {
		return store.SeedKey{KeyID: s.keyID, Password: s.password, CreatedAt: now.Add(-48 * time.Hour), Verification: escrow.Verified}
	}
	old := store.SeedKey{KeyID: togo.keyID, Password: togo.password, CreatedAt: now.Add(-72 * time.Hour), Superseded: true,
		SupersededAt: now.Add(-48 * time.Hour), RetainUntil: now.Add(24 * time.Hour)}
	reported := func(name string, ago time.Duration, vols ...store.SeedVolume) store.SeedDevice {
		return store.SeedDevice{Name: name, OwnerUPN: "Alice@Example.com", EnrolledAt: now.Add(-90 * 24 * time.Hour), LastSeenAt: now.Add(-ago),
			ReportedAt: now.Add(-ago), Tags: []string{"site:berlin"}, Volumes: vols}
	}
	failedVol := os(escrow.ProtectionOn, escrow.FullyEncrypted)
	failedVol.Failure, failedVol.FailureAt = "escrowFailed: 0x80310000", now.Add(-time.Hour)
	rotating := os(escrow.ProtectionOn, escrow.FullyEncrypted, key(genSample(2)))
	rotating.RotationOpen = true
	data := store.SeedVolume{ID: dataVolume, MountPoint: "D:", Type: escrow.VolumeFixedData, Protection: escrow.ProtectionOn,
		Encryption: escrow.FullyEncrypted, Keys: []store.SeedKey{key(cbc128)}}
	fleet := []struct {
		device store.SeedDevice
		want   escrow.EscrowStatus
		keys   []sample // disclosed
	}{
		{reported("LT-ESCROWED", time.Hour, os(escrow.ProtectionOn, escrow.FullyEncrypted, key(xts128), old), data), escrow.StatusEscrowed, []sample{xts128, togo, cbc128}},
		{reported("LT-OFF", time.Hour, os(escrow.ProtectionOff, escrow.FullyDecrypted)), escrow.StatusNotAvailable, nil},
		{store.SeedDevice{Name: "LT-NEW", EnrolledAt: now.Add(-time.Minute), LastSeenAt: now.Add(-time.Minute)}, escrow.StatusPending, nil},
		{reported("LT-FAILED", time.Hour, failedVol), escrow.StatusFailed, nil},
		{reported("LT-MISSING", 72*time.Hour, os(escrow.ProtectionOn, escrow.FullyEncrypted)), escrow.StatusFailed, nil},
		{reported("LT-ENCRYPTING", 10*time.Minute, os(escrow.ProtectionOff, escrow.EncryptionInProgress)), escrow.StatusPending, nil},
		{reported("LT-ROTATING", time.Hour, rotating), escrow.StatusPending, []sample{genSample(2)}},
	}
	var devices []store.SeedDevice
	for _, f := range fleet {
		devices = append(devices, f.device)
	}
	seeded, err := e.db.Seed(e.ctx, escrow.Origin{Source: escrow.SourceAgent}, devices)
	if err != nil {
		t.Fatalf("Seed: %v", err)
	}
	if len(seeded) != len(fleet) {
		t.Fatalf("Seed returned %d devices, want %d", len(seeded), len(fleet))
	}
	for i, f := range fleet {
		s := seeded[i]
		if got := e.status(s.ID); got != f.want {
			t.Errorf("%s: status %s, want %s", f.device.Name, got, f.want)
		}
		p, err := e.db.AuthenticateDevice(e.ctx, s.Token)
		if err != nil || p.DeviceID != s.ID {
			t.Errorf("%s: its token authenticates %+v, %v", f.device.Name, p, err)
		}
		got := map[string]string{}
		for _, k := range e.disclose(s.ID).Keys {
			got[k.KeyID] = k.Material
		}
		if len(got) != len(f.keys) {
			t.Errorf("%s: %d keys disclosed, want %d", f.device.Name, len(got), len(f.keys))
		}
		for _, k := range f.keys {
			if got[k.keyID] != k.password {
				t.Errorf("%s: key %s does not disclose its password", f.device.Name, k.keyID)
			}
		}
	}
	if e.device(seeded[0].ID).Tags[0] != "site:berlin" {
		t.Errorf("tags not stored")
	}
	// One enrollment per device, one escrow per key; and the disclosures since.
	if n := e.countEvents(escrow.AuditFilter{Action: escrow.ActionKeyEscrow}); n != 4 {
		t.Errorf("%d key.escrow events, want 4", n)
	}
	if n := e.countEvents(escrow.AuditFilter{Action: escrow.ActionDeviceEnroll}); n != len(fleet) {
		t.Errorf("%d device.enroll events, want %d", n, len(fleet))
	}
	if _, err := e.db.VerifyAudit(e.ctx); err != nil {
		t.Errorf("VerifyAudit: %v", err)
	}
}
