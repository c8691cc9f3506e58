package store_test

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/escrow"
)

func TestEscrowIsIdempotent(t *testing.T) {
	t.Parallel()
	// 64 upper-case hex digits: the canonical form of a .BEK recovery key.
	const bek = "5A1F0E2D3C4B5A69788796A5B4C3D2E1F00F1E2D3C4B5A69788796A5B4C3D2E1"
	tests := []struct {
		name string
		req  escrow.EscrowRequest
	}{
		{"recovery password", passwordRequest(osVolume, xts128)},
		{"recovery key", escrow.EscrowRequest{KeyID: "4381F759-C4F8-4DE0-BB61-FC33A831BDA5", VolumeID: osVolume, MountPoint: "C:",
			VolumeType: escrow.VolumeOperatingSystem, Kind: escrow.KindRecoveryKey, Material: bek}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			en := e.enroll("LT-0042", "")
			escrows := escrow.AuditFilter{Action: escrow.ActionKeyEscrow, DeviceID: en.DeviceID}

			created, err := e.db.Escrow(e.ctx, deviceOrigin(en), en.DeviceID, tt.req)
			if err != nil || !created {
				t.Fatalf("first Escrow = %v, %v; want true, nil", created, err)
			}
			ev := e.events(escrows)
			if len(ev) != 1 || ev[0].Outcome != escrow.OutcomeSuccess || ev[0].KeyID != tt.req.KeyID || ev[0].Actor.ID != en.DeviceID {
				t.Fatalf("key.escrow events after the first escrow: %+v", ev)
			}
			// An agent retrying after a lost answer sends the same key again.
			for range 2 {
				created, err = e.db.Escrow(e.ctx, deviceOrigin(en), en.DeviceID, tt.req)
				if err != nil || created {
					t.Fatalf("repeated Escrow = %v, %v; want false, nil", created, err)
				}
			}
			if n := e.countEvents(escrows); n != 1 {
				t.Errorf("%d key.escrow events after repeats, want 1", n)
			}
			keys := e.keys(escrow.KeyFilter{DeviceID: en.DeviceID})
			if len(keys) != 1 || keys[0].KeyID != tt.req.KeyID || keys[0].Kind != tt.req.Kind || keys[0].Status != escrow.KeyActive ||
				keys[0].Verification != escrow.Unverified || !keys[0].CreatedAt.Equal(e.clock.Now()) {
				t.Fatalf("keys = %+v", keys)
			}
			d := e.disclose(en.DeviceID)
			if len(d.Keys) != 1 || d.Keys[0].Material != tt.req.Material {
				t.Errorf("disclosed %+v, want the escrowed material", d.Keys)
			}
		})
	}
}

func TestEscrowConflictKeepsMaterial(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		req  escrow.EscrowRequest
	}{
		{"different password", passwordRequest(osVolume, sample{xts128.keyID, cbc128.password})},
		// The same characters under another kind are a different secret.
		{"same material as another kind", escrow.EscrowRequest{KeyID: xts128.keyID, VolumeID: osVolume, MountPoint: "C:",
			VolumeType: escrow.VolumeOperatingSystem, Kind: escrow.KindRecoveryKey, Material: xts128.password}},
		{"different password for another volume", passwordRequest(dataVolume, sample{xts128.keyID, cbc128.password})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			en := e.enroll("LT-0042", "")
			e.escrowPassword(en, osVolume, xts128)

			created, err := e.db.Escrow(e.ctx, deviceOrigin(en), en.DeviceID, tt.req)
			wantCode(t, err, escrow.CodeConflict)
			if created {
				t.Error("created = true on a conflict")
			}
			if strings.Contains(err.Error(), cbc128.password) || strings.Contains(err.Error(), xts128.password) {
				t.Errorf("error repeats key material: %v", err)
			}

			ev := e.events(escrow.AuditFilter{Action: escrow.ActionKeyEscrow, DeviceID: en.DeviceID})
			if len(ev) != 2 {
				t.Fatalf("key.escrow events = %+v, want the success and one denied", ev)
			}
			if ev[1].Outcome != escrow.OutcomeDenied || ev[1].KeyID != xts128.keyID || ev[1].Actor.ID != en.DeviceID {
				t.Errorf("conflict event = %+v", ev[1])
			}

			d := e.disclose(en.DeviceID)
			if len(d.Keys) != 1 {
				t.Fatalf("disclosed %d keys, want 1", len(d.Keys))
			}
			k := d.Keys[0]
			if k.Material != xts128.password || k.Kind != escrow.KindRecoveryPassword || k.VolumeID != osVolume {
				t.Errorf("after a conflict the stored key is %s %s on %s, material changed = %v",
					k.Kind, k.KeyID, k.VolumeID, k.Material != xts128.password)
			}
		})
	}
}

// A refused escrow must leave the device as it was: a device that sends garbage for a key ID
// it already escrowed must not be able to rename or retype its volumes, or add new ones.
func TestEscrowConflictChangesNoVolume(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	en := e.enroll("LT-0042", "")
	e.escrowPassword(en, osVolume, xts128)

	req := escrow.EscrowRequest{KeyID: xts128.keyID, VolumeID: osVolume, MountPoint: "Z:", VolumeType: escrow.VolumeRemovable,
		Kind: escrow.KindRecoveryPassword, Material: cbc128.password}
	_, err := e.db.Escrow(e.ctx, deviceOrigin(en), en.DeviceID, req)
	wantCode(t, err, escrow.CodeConflict)
	req.VolumeID = dataVolume
	_, err = e.db.Escrow(e.ctx, deviceOrigin(en), en.DeviceID, req)
	wantCode(t, err, escrow.CodeConflict)

	vols := e.device(en.DeviceID).Volumes
	if len(vols) != 1 {
		t.Errorf("device has %d volumes after refused escrows, want 1: %+v", len(vols), vols)
	}
	for _, v := range vols {
		if v.ID == osVolume && (v.MountPoint != "C:" || v.Type != escrow.VolumeOperatingSystem) {
			t.Errorf("refused escrow changed the volume to %s %s", v.MountPoint, v.Type)
		}
	}
}

func TestEscrowInvalidStoresNothing(t *testing.T) {
	t.Parallel()
	valid := passwordRequest(osVolume, xts128)
	tests := []struct {
		name   string
		modify func(r *escrow.EscrowRequest)
	}{
		{"empty volumeId", func(r *escrow.EscrowRequest) { r.VolumeID = "" }},
		{"blank volumeId", func(r *escrow.EscrowRequest) { r.VolumeID = "   " }},
		{"volumeId too long", func(r *escrow.EscrowRequest) { r.VolumeID = strings.Repeat("v", 257) }},
		{"volumeId with newline", func(r *escrow.EscrowRequest) { r.VolumeID = osVolume + "\n" }},
		{"volumeId with NUL", func(r *escrow.EscrowRequest) { r.VolumeID = "vol\x00ume" }},
		{"volumeId not UTF-8", func(r *escrow.EscrowRequest) { r.VolumeID = "vol\xffume" }},
		{"mountPoint with control character", func(r *escrow.EscrowRequest) { r.MountPoint = "C:\x1b[2J" }},
		{"mountPoint too long", func(r *escrow.EscrowRequest) { r.MountPoint = strings.Repeat("C", 257) }},
		{"volumeType empty", func(r *escrow.EscrowRequest) { r.VolumeType = "" }},
		{"volumeType unknown", func(r *escrow.EscrowRequest) { r.VolumeType = "cdrom" }},
		{"volumeType wrong case", func(r *escrow.EscrowRequest) { r.VolumeType = "OperatingSystem" }},
		{"kind empty", func(r *escrow.EscrowRequest) { r.Kind = "" }},
		{"kind unknown", func(r *escrow.EscrowRequest) { r.Kind = "startupKey" }},
	}
	e := newEnv(t)
	en := e.enroll("LT-0042", "")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := e.in(t)
			before := e.countEvents(escrow.AuditFilter{})
			req := valid
			tt.modify(&req)
			created, err := e.db.Escrow(e.ctx, deviceOrigin(en), en.DeviceID, req)
			wantCode(t, err, escrow.CodeInvalid)
			if created {
				t.Error("created = true for an invalid request")
			}
			if msg := escrow.ErrorMessage(err); strings.Contains(msg, xts128.password) {
				t.Errorf("message repeats the password: %q", msg)
			}
			if after := e.countEvents(escrow.AuditFilter{}); after != before {
				t.Errorf("%d audit events written for an invalid request", after-before)
			}
			if keys := e.keys(escrow.KeyFilter{DeviceID: en.DeviceID}); len(keys) != 0 {
				t.Errorf("keys stored for an invalid request: %+v", keys)
			}
			if vols := e.device(en.DeviceID).Volumes; len(vols) != 0 {
				t.Errorf("volumes stored for an invalid request: %+v", vols)
			}
		})
	}
}

// A BitLocker To Go drive keeps its protector GUID when it moves to another computer, and each
// computer escrows it.
func TestEscrowSameKeyIDOnTwoDevices(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first := e.enroll("LT-0042", "alice@example.com")
	second := e.enroll("LT-0043", "bob@example.com")
	req := escrow.EscrowRequest{KeyID: togo.keyID, VolumeID: usbVolume, MountPoint: "E:", VolumeType: escrow.VolumeRemovable,
		Kind: escrow.KindRecoveryPassword, Material: togo.password}
	for _, en := range []escrow.Enrolled{first, second} {
		created, err := e.db.Escrow(e.ctx, deviceOrigin(en), en.DeviceID, req)
		if err != nil || !created {
			t.Fatalf("Escrow on %s = %v, %v; want true, nil", en.DeviceID, created, err)
		}
	}
	keys := e.keys(escrow.KeyFilter{KeyIDPrefix: togo.keyID})
	if len(keys) != 2 || keys[0].DeviceID == keys[1].DeviceID {
		t.Fatalf("keys with the drive's ID = %+v, want one per device", keys)
	}
	for _, en := range []escrow.Enrolled{first, second} {
		d := e.disclose(en.DeviceID)
		if len(d.Keys) != 1 || d.Keys[0].Material != togo.password || d.Keys[0].DeviceID != en.DeviceID {
			t.Errorf("disclosure of %s: %+v", en.DeviceID, d.Keys)
		}
	}
}

func TestKeyMaterialSealedAtRest(t *testing.T) {
	t.Parallel()
	sqliteOnly(t)
	e := newEnv(t)
	en := e.enroll("LT-0042", "")
	samples := readmeSamples(t)
	var volumes []escrow.ReportedVolume
	for i, s := range samples {
		vol := fmt.Sprintf(`\\?\Volume{00000000-0000-4000-8000-%012d}\`, i)
		e.escrowPassword(en, vol, s)
		v := onVolume(vol, s.keyID)
		v.Fingerprints = map[string]string{s.keyID: fingerprint(en.VerificationKey, s.password)}
		volumes = append(volumes, v)
	}
	// Take the material through every path that handles it before looking at the files.
	e.report(en, escrow.Report{Volumes: volumes})
	if d := e.disclose(en.DeviceID); len(d.Keys) != len(samples) {
		t.Fatalf("disclosed %d keys, want %d", len(d.Keys), len(samples))
	}

	check := func(when string, suffixes ...string) {
		t.Helper()
		var all []byte
		for _, suffix := range suffixes {
			b, err := os.ReadFile(e.path() + suffix)
			if os.IsNotExist(err) && suffix == "-shm" {
				continue
			}
			if err != nil {
				t.Fatalf("%s: %v", when, err)
			}
			for _, s := range samples {
				if containsSecret(b, s.password) {
					t.Errorf("%s: keyward.db%s holds the recovery password of %s in the clear", when, suffix, s.keyID)
				}
			}
			all = append(all, b...)
		}
		if bytes.Contains(all, en.VerificationKey) {
			t.Errorf("%s: the device's verification key is stored in the clear", when)
		}
		// The key IDs are stored in the clear; finding them shows the scan reads real rows.
		for _, s := range samples {
			if !bytes.Contains(all, []byte(s.keyID)) {
				t.Fatalf("%s: key ID %s not found in the files; the scan is not looking at the data", when, s.keyID)
			}
		}
	}
	check("while open", "", "-wal", "-shm")
	if err := e.db.Close(); err != nil {
		t.Fatal(err)
	}
	// Closing checkpoints the WAL into the main file.
	check("after close", "")
}
