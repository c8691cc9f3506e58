package store_test

import (
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// dataOn is a fixed data drive with BitLocker on, as reported with the given lock status and
// recovery-password protectors.
func dataOn(lock escrow.LockStatus, keyIDs ...string) escrow.ReportedVolume {
	v := escrow.ReportedVolume{Volume: escrow.Volume{ID: dataVolume, MountPoint: "D:", Type: escrow.VolumeFixedData,
		ProtectionStatus: escrow.ProtectionOn, EncryptionStatus: escrow.FullyEncrypted, LockStatus: lock}}
	for _, id := range keyIDs {
		v.Protectors = append(v.Protectors, escrow.Protector{KeyID: id, Type: escrow.ProtectorRecoveryPassword})
	}
	return v
}

// TestUnreadableVolumeKeepsKeys: a data drive reported locked, or encrypted with no protectors
// at all (the agent could not read them), changes no key, through reports and purge-job runs
// past the retention period; only an unlocked volume whose readable list lacks the key
// supersedes it.
func TestUnreadableVolumeKeepsKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		vol  escrow.ReportedVolume
	}{
		{"locked, no protectors", dataOn(escrow.Locked)},
		{"locked, other protectors", dataOn(escrow.Locked, cbc128.keyID)},
		{"unlocked, no protectors", dataOn(escrow.Unlocked)},
		{"lock status absent, no protectors", dataOn("")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t).in(t)
			en := e.enroll("LT-0042", "")
			req := passwordRequest(dataVolume, xts128)
			req.MountPoint, req.VolumeType = "D:", escrow.VolumeFixedData
			if _, err := e.db.Escrow(e.ctx, deviceOrigin(en), en.DeviceID, req); err != nil {
				t.Fatal(err)
			}
			e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume), dataOn(escrow.Unlocked, xts128.keyID)}})
			for range 3 {
				e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume), tt.vol}})
				e.clock.Advance(8 * 24 * time.Hour) // past the 7-day retention
				if _, err := e.db.RunJobs(e.ctx); err != nil {
					t.Fatal(err)
				}
			}
			if k := e.key(en.DeviceID, xts128.keyID); k.Status != escrow.KeyActive || !k.RetainUntil.IsZero() {
				t.Fatalf("key of an unreadable volume: %s, retained until %v; want active", k.Status, k.RetainUntil)
			}
			if n := e.countEvents(escrow.AuditFilter{Action: escrow.ActionKeySupersede}); n != 0 {
				t.Errorf("%d key.supersede events for an unreadable volume", n)
			}
			if d := e.disclose(en.DeviceID); len(d.Keys) != 1 || d.Keys[0].Material != xts128.password {
				t.Errorf("disclosure after the jobs ran: %+v", d.Keys)
			}
			var data escrow.VolumeDetail
			for _, v := range e.device(en.DeviceID).Volumes {
				if v.ID == dataVolume {
					data = v
				}
			}
			want := tt.vol.LockStatus
			if want == "" {
				want = escrow.Unlocked
			}
			if data.LockStatus != want {
				t.Errorf("lock status stored = %q, want %q", data.LockStatus, want)
			}
			if len(tt.vol.Protectors) == 0 && (len(data.Protectors) != 1 || data.Protectors[0].KeyID != xts128.keyID) {
				t.Errorf("protectors after an empty list: %+v, want the last ones read", data.Protectors)
			}

			// Unlocked with a readable list that lacks the key: now it is gone from the volume.
			e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume), dataOn(escrow.Unlocked, cbc128.keyID)}})
			if k := e.key(en.DeviceID, xts128.keyID); k.Status != escrow.KeySuperseded {
				t.Errorf("key missing from an unlocked volume's list is %s, want superseded", k.Status)
			}
		})
	}
}

// TestReportLockStatusValidated: a lock status other than unlocked or locked is refused with
// a 400 naming the field, and nothing of the report is stored.
func TestReportLockStatusValidated(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	en := e.enroll("LT-0042", "")
	_, err := e.db.ApplyReport(e.ctx, deviceOrigin(en), en.DeviceID,
		escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume), dataOn("Locked")}})
	wantCode(t, err, escrow.CodeInvalid)
	if msg := escrow.ErrorMessage(err); msg != "volumes[1].lockStatus: must be unlocked or locked" {
		t.Errorf("message = %q", msg)
	}
	if d := e.device(en.DeviceID); len(d.Volumes) != 0 || !d.ReportedAt.IsZero() {
		t.Errorf("a refused report stored %+v", d)
	}
}
