package escrow_test

import (
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// statusNow is the fixed "now" of the status tests; grace is the SPEC §3 default.
var statusNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

const grace = time.Hour

// encrypted returns a present volume with BitLocker on, fully encrypted, with its recovery
// password escrowed: the state that is "escrowed" unless a case changes something.
func encrypted(mount string) escrow.Volume {
	return escrow.Volume{
		DeviceID:         "6b1f0a52-8f7e-4a57-9a0e-4f1c3f7f2d10",
		ID:               `\\?\Volume{0000000` + strings.ToLower(mount[:1]) + `-5d4e-4f60-8a7b-1c2d3e4f5a6b}\`,
		MountPoint:       mount,
		Type:             escrow.VolumeOperatingSystem,
		ProtectionStatus: escrow.ProtectionOn,
		EncryptionStatus: escrow.FullyEncrypted,
		Protectors:       []escrow.Protector{{KeyID: "0A1B2C3D-4E5F-6789-ABCD-EF0123456789", Type: escrow.ProtectorRecoveryPassword}},
		Present:          true,
	}
}

// decrypted returns a present volume with BitLocker off.
func decrypted(mount string) escrow.Volume {
	v := encrypted(mount)
	v.ProtectionStatus = escrow.ProtectionOff
	v.EncryptionStatus = escrow.FullyDecrypted
	v.Protectors = nil
	return v
}

// suspended returns a volume whose protection is suspended: off, but the data still encrypted.
func suspended(mount string) escrow.Volume {
	v := encrypted(mount)
	v.ProtectionStatus = escrow.ProtectionOff
	return v
}

func missingSince(v escrow.Volume, ago time.Duration) escrow.Volume {
	v.MissingEscrowSince = statusNow.Add(-ago)
	return v
}

func failing(v escrow.Volume, why string) escrow.Volume {
	v.Failure = why
	v.FailureAt = statusNow.Add(-time.Minute)
	return v
}

func encrypting(v escrow.Volume) escrow.Volume {
	v.EncryptionStatus = escrow.EncryptionInProgress
	return v
}

func TestVolumeStatus(t *testing.T) {
	tests := []struct {
		name      string
		state     escrow.VolumeState
		zeroGrace bool // use a grace period of 0 instead of the default 1h
		want      escrow.EscrowStatus
		wantWhy   string // substring of Why; Why must be empty when the status is escrowed
	}{
		// Not Available.
		{name: "protection off and fully decrypted is notAvailable",
			state: escrow.VolumeState{Volume: decrypted("D:")}, want: escrow.StatusNotAvailable, wantWhy: "off"},
		{name: "off wins over a stale failure (first rule wins)",
			state: escrow.VolumeState{Volume: failing(decrypted("D:"), "escrow failed"), Mismatch: true, RotationOpen: true},
			want:  escrow.StatusNotAvailable, wantWhy: "off"},
		// A suspended volume counts as on.
		{name: "suspended (protection off, fully encrypted) with escrow is escrowed",
			state: escrow.VolumeState{Volume: suspended("C:")}, want: escrow.StatusEscrowed},
		{name: "suspended without escrow past grace is failed",
			state: escrow.VolumeState{Volume: missingSince(suspended("C:"), grace+time.Second)}, want: escrow.StatusFailed, wantWhy: "missing escrow"},
		{name: "protection off while encryption paused counts as on",
			state: escrow.VolumeState{Volume: func() escrow.Volume {
				v := suspended("C:")
				v.EncryptionStatus = escrow.EncryptionPaused
				return v
			}()}, want: escrow.StatusEscrowed},
		{name: "protection off while decrypting counts as on until fully decrypted",
			state: escrow.VolumeState{Volume: func() escrow.Volume {
				v := suspended("C:")
				v.EncryptionStatus = escrow.DecryptionInProgress
				return v
			}()}, want: escrow.StatusEscrowed},
		// Failed.
		{name: "reported escrow failure is failed and says why",
			state: escrow.VolumeState{Volume: failing(encrypted("C:"), "escrow failed: server unreachable")},
			want:  escrow.StatusFailed, wantWhy: "escrow failed: server unreachable"},
		{name: "verification mismatch is failed",
			state: escrow.VolumeState{Volume: encrypted("C:"), Mismatch: true}, want: escrow.StatusFailed, wantWhy: "does not match"},
		{name: "missing escrow one second past grace is failed",
			state: escrow.VolumeState{Volume: missingSince(encrypted("C:"), grace+time.Second)},
			want:  escrow.StatusFailed, wantWhy: "missing escrow since 2025-03-01T10:59:59Z"},
		{name: "missing escrow a day past grace is failed",
			state: escrow.VolumeState{Volume: missingSince(encrypted("C:"), 24*time.Hour)}, want: escrow.StatusFailed, wantWhy: "missing escrow"},
		{name: "encrypting one second past grace is failed",
			state: escrow.VolumeState{Volume: missingSince(encrypting(encrypted("C:")), grace+time.Second)},
			want:  escrow.StatusFailed, wantWhy: "missing escrow"},
		{name: "zero grace: missing for one second is failed",
			state: escrow.VolumeState{Volume: missingSince(encrypted("C:"), time.Second)}, zeroGrace: true, want: escrow.StatusFailed},
		// Pending.
		{name: "not reported yet is pending",
			state: escrow.VolumeState{Volume: func() escrow.Volume {
				v := encrypted("C:")
				v.ProtectionStatus, v.EncryptionStatus = "", ""
				return v
			}()}, want: escrow.StatusPending, wantWhy: "not reported"},
		{name: "rotation open is pending",
			state: escrow.VolumeState{Volume: encrypted("C:"), RotationOpen: true}, want: escrow.StatusPending, wantWhy: "rotation"},
		{name: "encrypting within grace is pending",
			state: escrow.VolumeState{Volume: missingSince(encrypting(encrypted("C:")), time.Minute)},
			want:  escrow.StatusPending, wantWhy: "encrypting"},
		{name: "on without escrow within grace is pending",
			state: escrow.VolumeState{Volume: missingSince(encrypted("C:"), time.Minute)}, want: escrow.StatusPending, wantWhy: "not escrowed"},
		{name: "missing escrow exactly at the grace period is still pending",
			state: escrow.VolumeState{Volume: missingSince(encrypted("C:"), grace)}, want: escrow.StatusPending, wantWhy: "not escrowed"},
		{name: "zero grace: missing since now is pending",
			state: escrow.VolumeState{Volume: missingSince(encrypted("C:"), 0)}, zeroGrace: true, want: escrow.StatusPending},
		// Precedence inside one volume.
		{name: "failure beats rotation open",
			state: escrow.VolumeState{Volume: failing(encrypted("C:"), "rotation failed"), RotationOpen: true},
			want:  escrow.StatusFailed, wantWhy: "rotation failed"},
		{name: "mismatch beats rotation open",
			state: escrow.VolumeState{Volume: encrypted("C:"), Mismatch: true, RotationOpen: true}, want: escrow.StatusFailed},
		{name: "missing escrow past grace beats rotation open",
			state: escrow.VolumeState{Volume: missingSince(encrypted("C:"), 2*grace), RotationOpen: true},
			want:  escrow.StatusFailed, wantWhy: "missing escrow"},
		{name: "reported failure beats missing escrow within grace",
			state: escrow.VolumeState{Volume: failing(missingSince(encrypted("C:"), time.Minute), "escrow failed")},
			want:  escrow.StatusFailed, wantWhy: "escrow failed"},
		// Escrowed.
		{name: "on, escrowed, nothing pending is escrowed",
			state: escrow.VolumeState{Volume: encrypted("C:")}, want: escrow.StatusEscrowed},
		{name: "protection on while still encrypting, already escrowed, is escrowed",
			state: escrow.VolumeState{Volume: encrypting(encrypted("C:"))}, want: escrow.StatusEscrowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := grace
			if tt.zeroGrace {
				g = 0
			}
			got := escrow.VolumeStatus(tt.state, statusNow, g)
			if got.Status != tt.want {
				t.Fatalf("VolumeStatus = %q (%q), want %q", got.Status, got.Why, tt.want)
			}
			if !got.Status.Valid() {
				t.Errorf("status %q is not one of the four statuses", got.Status)
			}
			checkWhy(t, got, tt.wantWhy)
		})
	}
}

func TestDeviceStatus(t *testing.T) {
	vs := func(vols ...escrow.Volume) []escrow.VolumeState {
		out := make([]escrow.VolumeState, len(vols))
		for i, v := range vols {
			out[i] = escrow.VolumeState{Volume: v}
		}
		return out
	}
	tests := []struct {
		name     string
		reported bool
		volumes  []escrow.VolumeState
		want     escrow.EscrowStatus
		wantVol  string // the volume Why must start with: its mount point, or its ID without one
		wantWhy  string // what else Why must contain; Why must be empty when the status is escrowed
	}{
		// Enrolled, not reported.
		{name: "enrolled and not reported is pending", reported: false, want: escrow.StatusPending, wantWhy: "enrolled, not reported"},
		{name: "not reported with a reported failure is failed (failed beats pending)", reported: false,
			volumes: vs(failing(encrypted("C:"), "escrow failed")), want: escrow.StatusFailed, wantVol: "C:", wantWhy: "escrow failed"},
		// Not Available.
		{name: "BitLocker off on every volume is notAvailable", reported: true,
			volumes: vs(decrypted("C:"), decrypted("D:")), want: escrow.StatusNotAvailable, wantWhy: "BitLocker is off on every volume"},
		{name: "reported with no volumes is notAvailable (nothing is on)", reported: true,
			want: escrow.StatusNotAvailable},
		{name: "one volume off and one escrowed is escrowed, not notAvailable", reported: true,
			volumes: vs(decrypted("C:"), encrypted("D:")), want: escrow.StatusEscrowed},
		{name: "one volume off and one failed is failed", reported: true,
			volumes: vs(decrypted("C:"), failing(encrypted("D:"), "escrow failed")), want: escrow.StatusFailed, wantVol: "D:", wantWhy: "escrow failed"},
		{name: "off plus suspended is not notAvailable: suspended counts as on", reported: true,
			volumes: vs(decrypted("C:"), suspended("D:")), want: escrow.StatusEscrowed},
		{name: "suspended volume missing escrow past grace makes the device failed", reported: true,
			volumes: vs(decrypted("C:"), missingSince(suspended("D:"), 2*grace)), want: escrow.StatusFailed, wantVol: "D:", wantWhy: "missing escrow"},
		// Failed.
		{name: "reported failure names the mount point", reported: true,
			volumes: vs(encrypted("C:"), failing(encrypted("E:"), "rotation failed: access denied")),
			want:    escrow.StatusFailed, wantVol: "E:", wantWhy: "rotation failed: access denied"},
		{name: "verification mismatch names the mount point", reported: true,
			volumes: []escrow.VolumeState{{Volume: encrypted("C:")}, {Volume: encrypted("F:"), Mismatch: true}},
			want:    escrow.StatusFailed, wantVol: "F:", wantWhy: "escrowed recovery password does not match"},
		{name: "missing escrow one second past grace is failed", reported: true,
			volumes: vs(missingSince(encrypted("C:"), grace+time.Second)), want: escrow.StatusFailed, wantVol: "C:", wantWhy: "missing escrow since"},
		{name: "missing escrow exactly at grace is pending", reported: true,
			volumes: vs(missingSince(encrypted("C:"), grace)), want: escrow.StatusPending, wantVol: "C:", wantWhy: "recovery password not escrowed yet"},
		{name: "volume without a mount point is named by its volume ID", reported: true,
			volumes: vs(func() escrow.Volume {
				v := failing(encrypted("C:"), "escrow failed")
				v.MountPoint = ""
				return v
			}()), want: escrow.StatusFailed, wantVol: `\\?\Volume{0000000c-5d4e-4f60-8a7b-1c2d3e4f5a6b}\`, wantWhy: "escrow failed"},
		// Precedence across volumes.
		{name: "failed beats pending whatever the volume order", reported: true,
			volumes: []escrow.VolumeState{{Volume: encrypted("C:"), RotationOpen: true}, {Volume: failing(encrypted("D:"), "escrow failed")}},
			want:    escrow.StatusFailed, wantVol: "D:", wantWhy: "escrow failed"},
		{name: "failed beats escrowed", reported: true,
			volumes: vs(encrypted("C:"), missingSince(encrypted("D:"), 3*grace)), want: escrow.StatusFailed, wantVol: "D:", wantWhy: "missing escrow"},
		{name: "pending beats escrowed", reported: true,
			volumes: vs(encrypted("C:"), missingSince(encrypted("D:"), time.Minute)), want: escrow.StatusPending, wantVol: "D:", wantWhy: "recovery password not escrowed yet"},
		// Pending.
		{name: "rotation open is pending", reported: true,
			volumes: []escrow.VolumeState{{Volume: encrypted("C:"), RotationOpen: true}}, want: escrow.StatusPending, wantVol: "C:", wantWhy: "rotation in progress"},
		{name: "encrypting within grace is pending", reported: true,
			volumes: vs(missingSince(encrypting(encrypted("C:")), time.Minute)), want: escrow.StatusPending, wantVol: "C:", wantWhy: "encrypting"},
		{name: "a volume not yet reported is pending", reported: true,
			volumes: vs(encrypted("C:"), func() escrow.Volume {
				v := encrypted("D:")
				v.ProtectionStatus, v.EncryptionStatus = "", ""
				return v
			}()), want: escrow.StatusPending, wantVol: "D:", wantWhy: "not reported yet"},
		// Escrowed.
		{name: "every volume on and escrowed is escrowed", reported: true,
			volumes: vs(encrypted("C:"), encrypted("D:")), want: escrow.StatusEscrowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := escrow.DeviceStatus(tt.reported, tt.volumes, statusNow, grace)
			if got.Status != tt.want {
				t.Fatalf("DeviceStatus = %q (%q), want %q", got.Status, got.Why, tt.want)
			}
			if tt.want == escrow.StatusEscrowed {
				if got.Why != "" {
					t.Errorf("Why = %q, want empty for escrowed", got.Why)
				}
				return
			}
			if !strings.HasPrefix(got.Why, tt.wantVol) {
				t.Errorf("Why = %q, want it to start with the volume %q", got.Why, tt.wantVol)
			}
			if !strings.Contains(got.Why, tt.wantWhy) {
				t.Errorf("Why = %q, want it to contain %q", got.Why, tt.wantWhy)
			}
		})
	}
}

func checkWhy(t *testing.T, got escrow.StatusResult, want string) {
	t.Helper()
	if got.Status == escrow.StatusEscrowed {
		if got.Why != "" {
			t.Errorf("Why = %q, want empty for escrowed", got.Why)
		}
		return
	}
	if got.Why == "" {
		t.Errorf("Why is empty for status %q", got.Status)
	}
	if !strings.Contains(got.Why, want) {
		t.Errorf("Why = %q, want it to contain %q", got.Why, want)
	}
}

func TestEscrowStatusValid(t *testing.T) {
	tests := []struct {
		status escrow.EscrowStatus
		want   bool
	}{
		{escrow.StatusEscrowed, true},
		{escrow.StatusPending, true},
		{escrow.StatusFailed, true},
		{escrow.StatusNotAvailable, true},
		{"", false},
		{"Escrowed", false},
		{"not_available", false},
		{"notavailable", false},
		{"missing", false},
	}
	for _, tt := range tests {
		t.Run(string(tt.status), func(t *testing.T) {
			if got := tt.status.Valid(); got != tt.want {
				t.Errorf("EscrowStatus(%q).Valid() = %v, want %v", tt.status, got, tt.want)
			}
		})
	}
	// The API names are a contract (SPEC §3): they must never change.
	for status, want := range map[escrow.EscrowStatus]string{
		escrow.StatusEscrowed: "escrowed", escrow.StatusPending: "pending",
		escrow.StatusFailed: "failed", escrow.StatusNotAvailable: "notAvailable",
	} {
		if string(status) != want {
			t.Errorf("status constant %q, want %q", status, want)
		}
	}
	if escrow.DefaultGracePeriod != time.Hour {
		t.Errorf("DefaultGracePeriod = %v, want 1h (SPEC §3)", escrow.DefaultGracePeriod)
	}
}
