package bitlockersim_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/agent/bitlocker"
	"github.com/keyward/keyward/internal/agent/bitlocker/bitlockersim"
)

// These tests drive the simulator through bitlocker.System, the code the agent runs on Windows:
// they check the simulator's Windows behaviour and System's reading of it together.

const (
	pw1 = "235818-357951-253979-013365-241120-245575-342914-591910"
	pw2 = "042647-302313-590458-071500-554323-116567-412181-516978"
)

var ctx = context.Background()

func newSim() (*bitlockersim.Sim, *bitlocker.System, string) {
	s := bitlockersim.New(7)
	s.AddVolume(bitlockersim.VolumeSpec{MountPoint: "C:", Type: bitlocker.OperatingSystem,
		ProtectionStatus: bitlocker.ProtectionOn, EncryptionStatus: bitlocker.FullyEncrypted,
		Protectors: []bitlockersim.ProtectorSpec{{KeyID: "64311DEA-4587-4029-924A-BA299647998E", Type: bitlocker.RecoveryPassword, Password: pw1}, {Type: bitlocker.TPM}}})
	s.AddVolume(bitlockersim.VolumeSpec{MountPoint: "F:", Type: bitlocker.Removable, Locked: true,
		ProtectionStatus: bitlocker.ProtectionOn, EncryptionStatus: bitlocker.FullyEncrypted,
		Protectors: []bitlockersim.ProtectorSpec{{Type: bitlocker.RecoveryPassword, Password: pw2}}})
	return s, s.System(), "64311DEA-4587-4029-924A-BA299647998E"
}

func TestVolumesAndMaterial(t *testing.T) {
	s, sys, id := newSim()
	s.AddVolume(bitlockersim.VolumeSpec{MountPoint: "G:", Type: bitlocker.FixedData, Locked: true, ProtectorsHidden: true,
		Protectors: []bitlockersim.ProtectorSpec{{Type: bitlocker.RecoveryPassword, Password: pw2}}})
	vols, err := sys.Volumes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(vols) != 3 || vols[0].MountPoint != "C:" || len(vols[0].Protectors) != 2 || vols[0].Protectors[0].KeyID != id ||
		vols[0].Protectors[1].Type != bitlocker.TPM || vols[0].Type != bitlocker.OperatingSystem || vols[0].Locked {
		t.Fatalf("volumes %+v", vols)
	}
	if f := vols[1]; !f.Locked || f.ProtectorsUnreadable || len(f.Protectors) != 1 || f.Type != bitlocker.Removable || !f.Encrypted() {
		t.Fatalf("a locked volume that lists its protectors shows %+v", f)
	}
	if g := vols[2]; !g.Locked || !g.ProtectorsUnreadable || len(g.Protectors) != 0 || g.Type != bitlocker.FixedData {
		t.Fatalf("a locked volume that hides its protectors shows %+v", g)
	}
	if pw, err := sys.RecoveryPassword(ctx, "C:", id); err != nil || pw != pw1 {
		t.Fatalf("RecoveryPassword = %q, %v", pw, err)
	}
	if _, err := sys.RecoveryPassword(ctx, "F:", vols[1].Protectors[0].KeyID); !errors.Is(err, bitlocker.ErrLocked) || !errors.Is(err, bitlocker.FVE_E_LOCKED_VOLUME) {
		t.Fatalf("material of a locked volume: %v", err)
	}
	if _, err := sys.RecoveryPassword(ctx, "C:", vols[0].Protectors[1].KeyID); err == nil {
		t.Fatal("a TPM protector gave a recovery password")
	}
	if _, err := sys.RecoveryPassword(ctx, "C:", "00000000-0000-0000-0000-000000000000"); !errors.Is(err, bitlocker.ErrNotFound) {
		t.Fatalf("unknown protector: %v", err)
	}
	if _, err := sys.ExternalKey(ctx, "C:", id); err == nil {
		t.Fatal("a recovery password gave an external key")
	}
	if _, err := sys.RecoveryPassword(ctx, "Z:", id); !errors.Is(err, bitlocker.ErrNotFound) {
		t.Fatalf("unknown volume: %v", err)
	}
}

func TestChanges(t *testing.T) {
	s, sys, id := newSim()
	newID, err := sys.AddRecoveryPassword(ctx, "C:")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bitlocker.CanonicalKeyID(newID); err != nil || newID == id {
		t.Fatalf("new key ID %q", newID)
	}
	generated, err := sys.RecoveryPassword(ctx, "C:", newID)
	if err != nil {
		t.Fatal(err)
	}
	if err := sys.RemoveProtector(ctx, "C:", id); err != nil {
		t.Fatal(err)
	}
	if err := sys.RemoveProtector(ctx, "C:", id); !errors.Is(err, bitlocker.ErrNotFound) {
		t.Fatalf("removing twice: %v", err)
	}
	if !slices.Contains(s.Passwords(), pw1) || !slices.Contains(s.Passwords(), generated) {
		t.Fatal("Passwords forgets removed ones")
	}
	// The last protector of a protected volume: Windows refuses, with its code.
	if err := sys.RemoveProtector(ctx, "C:", s.Snapshot()[0].Protectors[0].KeyID); err != nil {
		t.Fatal(err) // the TPM protector; the new recovery password is left
	}
	err = sys.RemoveProtector(ctx, "C:", newID)
	if !errors.Is(err, bitlocker.ErrLastProtector) || !errors.Is(err, bitlocker.FVE_E_KEY_REQUIRED) || err.Error() != "DeleteKeyProtector: 0x8031001D FVE_E_KEY_REQUIRED (the last key protector of an encrypted volume cannot be deleted)" {
		t.Fatalf("removing the last protector: %v", err)
	}
	if len(s.Snapshot()[0].Protectors) != 1 {
		t.Fatal("the last protector is gone")
	}
	// A removal WMI reports as done but that did not happen is caught by the re-read.
	extra, _ := sys.AddRecoveryPassword(ctx, "C:")
	s.Inject(bitlockersim.Fault{Method: bitlockersim.DeleteKeyProtector, Ignore: true})
	if err := sys.RemoveProtector(ctx, "C:", extra); err == nil {
		t.Fatal("a removal that did nothing succeeded")
	}
	if _, err := sys.AddRecoveryPassword(ctx, "F:"); !errors.Is(err, bitlocker.ErrLocked) {
		t.Fatalf("adding to a locked volume: %v", err)
	}
}

func TestEncryptAndActivate(t *testing.T) {
	s, sys, _ := newSim()
	s.AddVolume(bitlockersim.VolumeSpec{MountPoint: "E:", Type: bitlocker.OperatingSystem,
		ProtectionStatus: bitlocker.ProtectionOff, EncryptionStatus: bitlocker.FullyDecrypted})
	if err := sys.EnableEncryption(ctx, "E:"); !errors.Is(err, bitlocker.FVE_E_CANNOT_ENCRYPT_NO_KEY) {
		t.Fatalf("Encrypt without protectors: %v", err)
	}
	if _, err := sys.AddRecoveryPassword(ctx, "E:"); err != nil {
		t.Fatal(err)
	}
	s.SetTPMReady(false)
	if err := sys.AddTPMProtector(ctx, "E:"); !errors.Is(err, bitlocker.TBS_E_SERVICE_NOT_RUNNING) {
		t.Fatalf("TPM protector without a TPM: %v", err)
	}
	if ready, err := sys.TPMReady(ctx); err != nil || ready {
		t.Fatalf("TPMReady = %v, %v", ready, err)
	}
	s.SetTPMReady(true)
	if err := sys.AddTPMProtector(ctx, "E:"); err != nil {
		t.Fatal(err)
	}
	if err := sys.AddTPMProtector(ctx, "E:"); err != nil {
		t.Fatalf("a second AddTPMProtector: %v", err) // it has one: nothing to do
	}
	// The policy asks for used space only; the agent passes what it asks.
	s.SetPolicy(bitlocker.EncryptionPolicy{OSEncryptionType: 2, EncryptionMethod: 7})
	if err := s.Encrypt(ctx, s.Snapshot()[2].ID, 6, 0); !errors.Is(err, bitlocker.E_INVALIDARG) {
		t.Fatalf("Encrypt against the policy: %v", err)
	}
	if err := sys.EnableEncryption(ctx, "E:"); err != nil {
		t.Fatal(err)
	}
	e := s.Snapshot()[2]
	if e.EncryptionStatus != bitlocker.EncryptionInProgress || len(e.Protectors) != 2 || e.Protectors[1].Type != bitlocker.TPM {
		t.Fatalf("after EnableEncryption: %+v", e)
	}

	// Device Encryption waiting for activation.
	s.AddVolume(bitlockersim.VolumeSpec{MountPoint: "W:", Type: bitlocker.OperatingSystem,
		ProtectionStatus: bitlocker.ProtectionOff, EncryptionStatus: bitlocker.FullyEncrypted})
	vols, _ := sys.Volumes(ctx)
	if !vols[3].WaitingForActivation() || vols[3].Encrypted() != true || vols[0].WaitingForActivation() {
		t.Fatalf("waiting for activation: %+v", vols[3])
	}
	if err := sys.EnableProtectors(ctx, "W:"); !errors.Is(err, bitlocker.FVE_E_CANNOT_ENCRYPT_NO_KEY) {
		t.Fatalf("EnableKeyProtectors without a protector: %v", err)
	}
	if _, err := sys.AddRecoveryPassword(ctx, "W:"); err != nil {
		t.Fatal(err)
	}
	if err := sys.AddTPMProtector(ctx, "W:"); err != nil {
		t.Fatal(err)
	}
	if err := sys.EnableProtectors(ctx, "W:"); err != nil {
		t.Fatal(err)
	}
	if w := s.Snapshot()[3]; w.ProtectionStatus != bitlocker.ProtectionOn {
		t.Fatalf("after EnableKeyProtectors: %+v", w)
	}
}

func TestFaults(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name      string
		fault     bitlockersim.Fault
		wantErr   error
		wantCrash bool
		wantAdded bool
	}{
		{"return value before: nothing changes", bitlockersim.Fault{Method: bitlockersim.ProtectKeyWithNumericalPassword, Code: bitlocker.FVE_E_FIPS_PREVENTS_RECOVERY_PASSWORD}, bitlocker.FVE_E_FIPS_PREVENTS_RECOVERY_PASSWORD, false, false},
		{"error after: the change is made", bitlockersim.Fault{Method: bitlockersim.ProtectKeyWithNumericalPassword, When: bitlockersim.After, Err: boom}, boom, false, true},
		{"crash before", bitlockersim.Fault{Method: bitlockersim.ProtectKeyWithNumericalPassword, Crash: true}, nil, true, false},
		{"crash after", bitlockersim.Fault{Method: bitlockersim.ProtectKeyWithNumericalPassword, When: bitlockersim.After, Crash: true}, nil, true, true},
		{"any change, first call", bitlockersim.Fault{Code: bitlocker.E_ACCESSDENIED}, bitlocker.ErrAccessDenied, false, false},
		{"another method", bitlockersim.Fault{Method: bitlockersim.DeleteKeyProtector, Err: boom}, nil, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, sys, _ := newSim()
			s.Inject(tt.fault)
			var err error
			crashed := func() (crashed bool) {
				defer func() {
					if v := recover(); v != nil {
						if _, ok := v.(bitlockersim.Crash); !ok {
							panic(v)
						}
						crashed = true
					}
				}()
				_, err = sys.AddRecoveryPassword(ctx, "C:")
				return false
			}()
			if crashed != tt.wantCrash || (err != nil) != (tt.wantErr != nil) || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("crashed %v, error %v", crashed, err)
			}
			added := len(s.Snapshot()[0].Protectors) == 3
			if added != tt.wantAdded {
				t.Fatalf("added %v, want %v", added, tt.wantAdded)
			}
			log := s.Log()
			if last := log[len(log)-1]; last.Method != bitlockersim.ProtectKeyWithNumericalPassword {
				t.Fatalf("the call is not logged: %v", log)
			}
		})
	}
}

func TestCheckEscrowedAndLog(t *testing.T) {
	s, sys, id := newSim()
	var seen []string
	s.AfterEach(func(op bitlockersim.Op) { seen = append(seen, op.String()) })
	s.Note("server acknowledged %s", id)
	if err := sys.RemoveProtector(ctx, "C:", id); err != nil {
		t.Fatal(err)
	}
	if len(seen) < 3 || seen[0] != "1 note server acknowledged "+id {
		t.Fatalf("hook saw %v", seen)
	}
	if err := s.CheckEscrowed(func(string, string) bool { return true }); err == nil {
		t.Fatal("C: has no recovery password left, yet the invariant holds")
	}
}

// Recovery unlocks are found by position in each log: an event written with a clock set back
// (after a CMOS reset) comes after the bookmark, and is found, though its time is older than
// anything read before.
func TestRecoveryUnlocksByBookmark(t *testing.T) {
	s, sys, id := newSim()
	s.AddRecoveryUnlock(bitlocker.RecoveryUnlock{Time: time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC), EventID: 24652, GUIDs: []string{id}})
	u, bm, err := sys.RecoveryUnlocks(ctx, nil)
	if err != nil || len(u) != 1 || u[0].EventID != 24652 || !slices.Equal(u[0].GUIDs, []string{"00000000-0000-0000-0000-000000000000", id}) ||
		bm[bitlocker.LogSystem] == "" || bm[bitlocker.LogManagement] != "" {
		t.Fatalf("first read: %+v, %v, %v", u, bm, err)
	}
	if again, bm2, err := sys.RecoveryUnlocks(ctx, bm); err != nil || len(again) != 0 || bm2[bitlocker.LogSystem] != bm[bitlocker.LogSystem] {
		t.Fatalf("read again from the bookmark: %+v, %v", again, err)
	}
	s.AddEvent(bitlocker.LogSystem, "Microsoft-Windows-Kernel-General", bitlocker.LogEvent{ID: 24652, Time: time.Unix(0, 0)})
	s.AddRecoveryUnlock(bitlocker.RecoveryUnlock{Time: time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC), EventID: 24654, GUIDs: []string{id}})
	s.AddRecoveryUnlock(bitlocker.RecoveryUnlock{Time: time.Date(2001, 1, 1, 0, 0, 5, 0, time.UTC), EventID: bitlocker.EventUnlockedInWinRE, GUIDs: []string{id}})
	u, _, err = sys.RecoveryUnlocks(ctx, bm)
	if err != nil || len(u) != 2 || u[0].EventID != 24654 || u[1].EventID != 805 || u[1].Log != bitlocker.LogManagement {
		t.Fatalf("after a clock reset: %+v, %v", u, err)
	}
	// A log that cannot be read fails the call and keeps its bookmark; the others move on.
	s.Inject(bitlockersim.Fault{Method: bitlockersim.Events, Code: bitlocker.E_ACCESSDENIED})
	_, next, err := sys.RecoveryUnlocks(ctx, bm)
	if !errors.Is(err, bitlocker.ErrAccessDenied) || next[bitlocker.LogSystem] != bm[bitlocker.LogSystem] || next[bitlocker.LogManagement] == bm[bitlocker.LogManagement] {
		t.Fatalf("an unreadable log: %v, %v", next, err)
	}
}
