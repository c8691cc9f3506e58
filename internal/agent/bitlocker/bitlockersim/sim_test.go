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

const (
	pw1 = "235818-357951-253979-013365-241120-245575-342914-591910"
	pw2 = "042647-302313-590458-071500-554323-116567-412181-516978"
)

var ctx = context.Background()

func newSim() (*bitlockersim.Sim, string) {
	s := bitlockersim.New(7)
	s.AddVolume(bitlockersim.VolumeSpec{MountPoint: "C:", Type: bitlocker.OperatingSystem,
		ProtectionStatus: bitlocker.ProtectionOn, EncryptionStatus: bitlocker.FullyEncrypted,
		Protectors: []bitlockersim.ProtectorSpec{{KeyID: "64311DEA-4587-4029-924A-BA299647998E", Type: bitlocker.RecoveryPassword, Password: pw1}, {Type: bitlocker.TPM}}})
	s.AddVolume(bitlockersim.VolumeSpec{MountPoint: "F:", Type: bitlocker.Removable, Locked: true,
		ProtectionStatus: bitlocker.ProtectionOn, EncryptionStatus: bitlocker.FullyEncrypted,
		Protectors: []bitlockersim.ProtectorSpec{{Type: bitlocker.RecoveryPassword, Password: pw2}}})
	return s, "64311DEA-4587-4029-924A-BA299647998E"
}

func TestVolumesAndMaterial(t *testing.T) {
	s, id := newSim()
	vols, err := s.Volumes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(vols) != 2 || vols[0].MountPoint != "C:" || len(vols[0].Protectors) != 2 || vols[0].Protectors[0].KeyID != id {
		t.Fatalf("volumes %+v", vols)
	}
	if f := vols[1]; !f.Locked || f.ProtectionStatus != bitlocker.ProtectionUnknown || f.EncryptionStatus != "" {
		t.Fatalf("a locked volume shows %+v", f)
	}
	if pw, err := s.RecoveryPassword(ctx, "C:", id); err != nil || pw != pw1 {
		t.Fatalf("RecoveryPassword = %q, %v", pw, err)
	}
	if _, err := s.RecoveryPassword(ctx, "F:", vols[1].Protectors[0].KeyID); !errors.Is(err, bitlocker.ErrNotReadable) {
		t.Fatalf("material of a locked volume: %v", err)
	}
	if _, err := s.RecoveryPassword(ctx, "C:", vols[0].Protectors[1].KeyID); err == nil {
		t.Fatal("a TPM protector gave a recovery password")
	}
	if _, err := s.RecoveryPassword(ctx, "C:", "00000000-0000-0000-0000-000000000000"); !errors.Is(err, bitlocker.ErrNotFound) {
		t.Fatalf("unknown protector: %v", err)
	}
	if _, err := s.ExternalKey(ctx, "C:", id); err == nil {
		t.Fatal("a recovery password gave an external key")
	}
}

func TestChanges(t *testing.T) {
	s, id := newSim()
	if _, err := s.AddRecoveryPassword(ctx, "C:", "123456-000000-000000-000000-000000-000000-000000-000000"); err == nil {
		t.Fatal("an invalid password was added")
	}
	newID, err := s.AddRecoveryPassword(ctx, "C:", pw2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bitlocker.CanonicalKeyID(newID); err != nil || newID == id {
		t.Fatalf("new key ID %q", newID)
	}
	if err := s.RemoveProtector(ctx, "C:", id); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveProtector(ctx, "C:", id); !errors.Is(err, bitlocker.ErrNotFound) {
		t.Fatalf("removing twice: %v", err)
	}
	if !slices.Contains(s.Passwords(), pw1) || !slices.Contains(s.Passwords(), pw2) {
		t.Fatal("Passwords forgets removed ones")
	}
	// The last protector of an encrypted volume stays.
	d := s.AddVolume(bitlockersim.VolumeSpec{MountPoint: "D:", Type: bitlocker.FixedData, ProtectionStatus: bitlocker.ProtectionOn,
		EncryptionStatus: bitlocker.FullyEncrypted, Protectors: []bitlockersim.ProtectorSpec{{Type: bitlocker.RecoveryPassword, Password: pw1}}})
	last := s.Snapshot()[2].Protectors[0].KeyID
	if err := s.RemoveProtector(ctx, "D:", last); err == nil {
		t.Fatalf("removed the last protector of %s", d)
	}
	// Encryption: needs a protector; adds the TPM on the operating-system volume only.
	s.AddVolume(bitlockersim.VolumeSpec{MountPoint: "E:", Type: bitlocker.OperatingSystem, ProtectionStatus: bitlocker.ProtectionOff, EncryptionStatus: bitlocker.FullyDecrypted})
	if err := s.EnableEncryption(ctx, "E:"); err == nil {
		t.Fatal("encryption started without a protector")
	}
	if _, err := s.AddRecoveryPassword(ctx, "E:", pw1); err != nil {
		t.Fatal(err)
	}
	if err := s.EnableEncryption(ctx, "E:"); err != nil {
		t.Fatal(err)
	}
	e := s.Snapshot()[3]
	if e.EncryptionStatus != bitlocker.EncryptionInProgress || len(e.Protectors) != 2 || e.Protectors[1].Type != bitlocker.TPM {
		t.Fatalf("after EnableEncryption: %+v", e)
	}
}

func TestFaults(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name      string
		fault     bitlockersim.Fault
		wantErr   bool
		wantCrash bool
		wantAdded bool
	}{
		{"error before: nothing changes", bitlockersim.Fault{Method: bitlockersim.AddRecoveryPassword, Err: boom}, true, false, false},
		{"error after: the change is made", bitlockersim.Fault{Method: bitlockersim.AddRecoveryPassword, When: bitlockersim.After, Err: boom}, true, false, true},
		{"crash before", bitlockersim.Fault{Method: bitlockersim.AddRecoveryPassword, Crash: true}, false, true, false},
		{"crash after", bitlockersim.Fault{Method: bitlockersim.AddRecoveryPassword, When: bitlockersim.After, Crash: true}, false, true, true},
		{"any method, second call", bitlockersim.Fault{Call: 2, Err: boom}, true, false, false},
		{"another method", bitlockersim.Fault{Method: bitlockersim.RemoveProtector, Err: boom}, false, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newSim()
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
				if tt.fault.Call == 2 {
					s.Volumes(ctx)
				}
				_, err = s.AddRecoveryPassword(ctx, "C:", pw2)
				return false
			}()
			if crashed != tt.wantCrash || (err != nil) != tt.wantErr {
				t.Fatalf("crashed %v, error %v", crashed, err)
			}
			added := len(s.Snapshot()[0].Protectors) == 3
			if added != tt.wantAdded {
				t.Fatalf("added %v, want %v", added, tt.wantAdded)
			}
			log := s.Log()
			if last := log[len(log)-1]; last.Method != bitlockersim.AddRecoveryPassword {
				t.Fatalf("the call is not logged: %v", log)
			}
		})
	}
}

func TestCheckEscrowedAndLog(t *testing.T) {
	s, id := newSim()
	var seen []string
	s.AfterEach(func(op bitlockersim.Op) { seen = append(seen, op.String()) })
	s.Note("server acknowledged %s", id)
	if err := s.RemoveProtector(ctx, "C:", id); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 || seen[0] != "1 note server acknowledged "+id {
		t.Fatalf("hook saw %v", seen)
	}
	if err := s.CheckEscrowed(func(string, string) bool { return true }); err == nil {
		t.Fatal("C: has no recovery password left, yet the invariant holds")
	}
	s.AddRecoveryUnlock(bitlocker.RecoveryUnlock{Time: time.Unix(100, 0), EventID: 24652, GUIDs: []string{id}})
	if u, err := s.RecoveryUnlocks(ctx, time.Unix(50, 0)); err != nil || len(u) != 1 {
		t.Fatalf("unlocks %v, %v", u, err)
	}
	if u, _ := s.RecoveryUnlocks(ctx, time.Unix(100, 0)); len(u) != 0 {
		t.Fatalf("an unlock at since is returned: %v", u)
	}
}
