package escrow_test

import (
	"fmt"
	"math/rand/v2"
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

// failureAt and rotationAt are when the failures and open rotations of the cases began.
var (
	failureAt  = statusNow.Add(-5 * time.Minute)
	rotationAt = statusNow.Add(-10 * time.Minute)
	enrolledAt = statusNow.Add(-2 * time.Hour)
)

func failing(v escrow.Volume, why string) escrow.Volume {
	v.Failure = why
	v.FailureAt = failureAt
	return v
}

func encrypting(v escrow.Volume) escrow.Volume {
	v.EncryptionStatus = escrow.EncryptionInProgress
	return v
}

func notReported(v escrow.Volume) escrow.Volume {
	v.ProtectionStatus, v.EncryptionStatus = "", ""
	return v
}

func rotating(v escrow.Volume) escrow.VolumeState {
	return escrow.VolumeState{Volume: v, RotationOpen: true, RotationSince: rotationAt}
}

func mismatched(v escrow.Volume) escrow.VolumeState {
	return escrow.VolumeState{Volume: v, Mismatch: true}
}

func TestVolumeStatus(t *testing.T) {
	state := func(v escrow.Volume) escrow.VolumeState { return escrow.VolumeState{Volume: v} }
	withRotation := func(s escrow.VolumeState) escrow.VolumeState {
		s.RotationOpen, s.RotationSince = true, rotationAt
		return s
	}
	tests := []struct {
		name        string
		state       escrow.VolumeState
		zeroGrace   bool // use a grace period of 0 instead of the default 1h
		want        escrow.EscrowStatus
		wantWhy     string    // substring of Why; Why must be empty when the status is escrowed
		wantSince   time.Time // when the condition began; zero where none is known
		wantMissing bool      // a failure that is missing escrow, not a reported one
	}{
		// Not Available.
		{name: "protection off and fully decrypted is notAvailable",
			state: state(decrypted("D:")), want: escrow.StatusNotAvailable},
		{name: "off wins over a stale failure, mismatch and rotation (first rule wins)",
			state: withRotation(mismatched(failing(decrypted("D:"), "escrow failed"))), want: escrow.StatusNotAvailable},
		// A suspended volume counts as on.
		{name: "suspended (protection off, fully encrypted) with escrow is escrowed",
			state: state(suspended("C:")), want: escrow.StatusEscrowed},
		{name: "suspended without escrow past grace is failed",
			state: state(missingSince(suspended("C:"), grace+time.Second)), want: escrow.StatusFailed,
			wantSince: statusNow.Add(-grace - time.Second), wantMissing: true},
		{name: "protection off while encryption paused counts as on",
			state: state(func() escrow.Volume {
				v := suspended("C:")
				v.EncryptionStatus = escrow.EncryptionPaused
				return v
			}()), want: escrow.StatusEscrowed},
		{name: "protection off while decrypting counts as on until fully decrypted",
			state: state(func() escrow.Volume {
				v := suspended("C:")
				v.EncryptionStatus = escrow.DecryptionInProgress
				return v
			}()), want: escrow.StatusEscrowed},
		// Failed.
		{name: "reported escrow failure is failed and says why",
			state: state(failing(encrypted("C:"), "escrow failed: server unreachable")),
			want:  escrow.StatusFailed, wantWhy: "escrow failed: server unreachable", wantSince: failureAt},
		{name: "verification mismatch is failed",
			state: mismatched(encrypted("C:")), want: escrow.StatusFailed, wantWhy: "match"},
		{name: "missing escrow one second past grace is failed",
			state: state(missingSince(encrypted("C:"), grace+time.Second)),
			want:  escrow.StatusFailed, wantWhy: "2025-03-01T10:59:59Z", wantSince: statusNow.Add(-grace - time.Second), wantMissing: true},
		{name: "missing escrow a day past grace is failed",
			state: state(missingSince(encrypted("C:"), 24*time.Hour)),
			want:  escrow.StatusFailed, wantSince: statusNow.Add(-24 * time.Hour), wantMissing: true},
		{name: "encrypting one second past grace is failed",
			state: state(missingSince(encrypting(encrypted("C:")), grace+time.Second)),
			want:  escrow.StatusFailed, wantSince: statusNow.Add(-grace - time.Second), wantMissing: true},
		{name: "zero grace: missing for one second is failed",
			state: state(missingSince(encrypted("C:"), time.Second)), zeroGrace: true,
			want: escrow.StatusFailed, wantSince: statusNow.Add(-time.Second), wantMissing: true},
		// Pending.
		{name: "not reported yet is pending",
			state: state(notReported(encrypted("C:"))), want: escrow.StatusPending, wantWhy: "not reported"},
		{name: "not reported yet wins over a failure (first rule wins)",
			state: state(notReported(failing(encrypted("C:"), "escrow failed"))), want: escrow.StatusPending, wantWhy: "not reported"},
		{name: "rotation open is pending",
			state: rotating(encrypted("C:")), want: escrow.StatusPending, wantWhy: "rotation", wantSince: rotationAt},
		{name: "encrypting within grace is pending",
			state: state(missingSince(encrypting(encrypted("C:")), time.Minute)),
			want:  escrow.StatusPending, wantWhy: "encrypting", wantSince: statusNow.Add(-time.Minute)},
		{name: "on without escrow within grace is pending",
			state: state(missingSince(encrypted("C:"), time.Minute)),
			want:  escrow.StatusPending, wantWhy: "not escrowed", wantSince: statusNow.Add(-time.Minute)},
		{name: "missing escrow exactly at the grace period is still pending",
			state: state(missingSince(encrypted("C:"), grace)),
			want:  escrow.StatusPending, wantWhy: "not escrowed", wantSince: statusNow.Add(-grace)},
		{name: "zero grace: missing since now is pending",
			state: state(missingSince(encrypted("C:"), 0)), zeroGrace: true, want: escrow.StatusPending, wantSince: statusNow},
		// Precedence inside one volume.
		{name: "failure beats rotation open",
			state: rotating(failing(encrypted("C:"), "rotation failed")),
			want:  escrow.StatusFailed, wantWhy: "rotation failed", wantSince: failureAt},
		{name: "mismatch beats rotation open",
			state: withRotation(mismatched(encrypted("C:"))), want: escrow.StatusFailed, wantWhy: "match"},
		{name: "missing escrow past grace beats rotation open",
			state: rotating(missingSince(encrypted("C:"), 2*grace)),
			want:  escrow.StatusFailed, wantSince: statusNow.Add(-2 * grace), wantMissing: true},
		{name: "rotation open beats missing escrow within grace",
			state: rotating(missingSince(encrypted("C:"), time.Minute)), want: escrow.StatusPending, wantWhy: "rotation", wantSince: rotationAt},
		{name: "reported failure beats missing escrow past grace",
			state: state(failing(missingSince(encrypted("C:"), 2*grace), "escrow failed")),
			want:  escrow.StatusFailed, wantWhy: "escrow failed", wantSince: failureAt},
		{name: "reported failure beats missing escrow within grace",
			state: state(failing(missingSince(encrypted("C:"), time.Minute), "escrow failed")),
			want:  escrow.StatusFailed, wantWhy: "escrow failed", wantSince: failureAt},
		// Escrowed.
		{name: "on, escrowed, nothing pending is escrowed",
			state: state(encrypted("C:")), want: escrow.StatusEscrowed},
		{name: "protection on while still encrypting, already escrowed, is escrowed",
			state: state(encrypting(encrypted("C:"))), want: escrow.StatusEscrowed},
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
			checkResult(t, got, tt.wantWhy, tt.wantSince, tt.wantMissing)
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
	enrolled := escrow.Device{ID: "6b1f0a52-8f7e-4a57-9a0e-4f1c3f7f2d10", Name: "LT-0042", EnrolledAt: enrolledAt}
	reported := enrolled
	reported.ReportedAt = statusNow.Add(-time.Minute)
	tests := []struct {
		name        string
		device      escrow.Device
		volumes     []escrow.VolumeState
		want        escrow.EscrowStatus
		wantVol     string // the volume Why must start with: its mount point, or its ID without one
		wantWhy     string // what else Why must contain; Why must be empty when the status is escrowed
		wantSince   time.Time
		wantMissing bool
	}{
		// Enrolled, not reported.
		{name: "enrolled and not reported is pending since enrollment", device: enrolled,
			want: escrow.StatusPending, wantWhy: "not reported", wantSince: enrolledAt},
		{name: "not reported: volumes without failure do not count", device: enrolled,
			volumes: vs(missingSince(encrypted("C:"), 3*grace)), want: escrow.StatusPending, wantWhy: "not reported", wantSince: enrolledAt},
		{name: "not reported with a reported failure is failed (failed beats pending)", device: enrolled,
			volumes: vs(encrypted("C:"), failing(encrypted("D:"), "escrow failed")),
			want:    escrow.StatusFailed, wantVol: "D:", wantWhy: "escrow failed", wantSince: failureAt},
		// Not Available.
		{name: "BitLocker off on every volume is notAvailable", device: reported,
			volumes: vs(decrypted("C:"), decrypted("D:")), want: escrow.StatusNotAvailable, wantWhy: "every volume"},
		{name: "reported with no volumes is notAvailable (nothing is on)", device: reported,
			want: escrow.StatusNotAvailable},
		{name: "one volume off and one escrowed is escrowed, not notAvailable", device: reported,
			volumes: vs(decrypted("C:"), encrypted("D:")), want: escrow.StatusEscrowed},
		{name: "one volume off and one failed is failed", device: reported,
			volumes: vs(decrypted("C:"), failing(encrypted("D:"), "escrow failed")),
			want:    escrow.StatusFailed, wantVol: "D:", wantWhy: "escrow failed", wantSince: failureAt},
		{name: "off plus suspended is not notAvailable: suspended counts as on", device: reported,
			volumes: vs(decrypted("C:"), suspended("D:")), want: escrow.StatusEscrowed},
		{name: "suspended volume missing escrow past grace makes the device failed", device: reported,
			volumes: vs(decrypted("C:"), missingSince(suspended("D:"), 2*grace)),
			want:    escrow.StatusFailed, wantVol: "D:", wantSince: statusNow.Add(-2 * grace), wantMissing: true},
		// Failed.
		{name: "reported failure names the mount point", device: reported,
			volumes: vs(encrypted("C:"), failing(encrypted("E:"), "rotation failed: access denied")),
			want:    escrow.StatusFailed, wantVol: "E:", wantWhy: "rotation failed: access denied", wantSince: failureAt},
		{name: "verification mismatch names the mount point", device: reported,
			volumes: []escrow.VolumeState{{Volume: encrypted("C:")}, mismatched(encrypted("F:"))},
			want:    escrow.StatusFailed, wantVol: "F:", wantWhy: "match"},
		{name: "missing escrow one second past grace is failed", device: reported,
			volumes: vs(missingSince(encrypted("C:"), grace+time.Second)),
			want:    escrow.StatusFailed, wantVol: "C:", wantWhy: "2025-03-01T10:59:59Z", wantSince: statusNow.Add(-grace - time.Second), wantMissing: true},
		{name: "missing escrow exactly at grace is pending", device: reported,
			volumes: vs(missingSince(encrypted("C:"), grace)),
			want:    escrow.StatusPending, wantVol: "C:", wantWhy: "not escrowed", wantSince: statusNow.Add(-grace)},
		{name: "volume without a mount point is named by its volume ID", device: reported,
			volumes: vs(func() escrow.Volume {
				v := failing(encrypted("C:"), "escrow failed")
				v.MountPoint = ""
				return v
			}()), want: escrow.StatusFailed, wantVol: `\\?\Volume{0000000c-5d4e-4f60-8a7b-1c2d3e4f5a6b}\`, wantWhy: "escrow failed", wantSince: failureAt},
		// Precedence across volumes.
		{name: "failed beats pending whatever the volume order", device: reported,
			volumes: []escrow.VolumeState{rotating(encrypted("C:")), {Volume: failing(encrypted("D:"), "escrow failed")}},
			want:    escrow.StatusFailed, wantVol: "D:", wantWhy: "escrow failed", wantSince: failureAt},
		{name: "failed beats escrowed", device: reported,
			volumes: vs(encrypted("C:"), missingSince(encrypted("D:"), 3*grace)),
			want:    escrow.StatusFailed, wantVol: "D:", wantSince: statusNow.Add(-3 * grace), wantMissing: true},
		{name: "pending beats escrowed", device: reported,
			volumes: vs(encrypted("C:"), missingSince(encrypted("D:"), time.Minute)),
			want:    escrow.StatusPending, wantVol: "D:", wantWhy: "not escrowed", wantSince: statusNow.Add(-time.Minute)},
		// Pending.
		{name: "rotation open is pending", device: reported,
			volumes: []escrow.VolumeState{rotating(encrypted("C:"))},
			want:    escrow.StatusPending, wantVol: "C:", wantWhy: "rotation", wantSince: rotationAt},
		{name: "encrypting within grace is pending", device: reported,
			volumes: vs(missingSince(encrypting(encrypted("C:")), time.Minute)),
			want:    escrow.StatusPending, wantVol: "C:", wantWhy: "encrypting", wantSince: statusNow.Add(-time.Minute)},
		{name: "a volume not yet reported is pending", device: reported,
			volumes: vs(encrypted("C:"), notReported(encrypted("D:"))),
			want:    escrow.StatusPending, wantVol: "D:", wantWhy: "not reported"},
		// Escrowed.
		{name: "every volume on and escrowed is escrowed", device: reported,
			volumes: vs(encrypted("C:"), encrypted("D:")), want: escrow.StatusEscrowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := escrow.DeviceStatus(tt.device, tt.volumes, statusNow, grace)
			if got.Status != tt.want {
				t.Fatalf("DeviceStatus = %q (%q), want %q", got.Status, got.Why, tt.want)
			}
			if !strings.HasPrefix(got.Why, tt.wantVol) {
				t.Errorf("Why = %q, want it to start with the volume %q", got.Why, tt.wantVol)
			}
			checkResult(t, got, tt.wantWhy, tt.wantSince, tt.wantMissing)
		})
	}
}

func checkResult(t *testing.T, got escrow.StatusResult, why string, since time.Time, missing bool) {
	t.Helper()
	if got.Status == escrow.StatusEscrowed {
		if got.Why != "" {
			t.Errorf("Why = %q, want empty for escrowed", got.Why)
		}
	} else {
		if got.Why == "" {
			t.Errorf("Why is empty for status %q", got.Status)
		}
		if !strings.Contains(got.Why, why) {
			t.Errorf("Why = %q, want it to contain %q", got.Why, why)
		}
	}
	if !got.Since.Equal(since) {
		t.Errorf("Since = %v, want %v", got.Since, since)
	}
	if got.MissingEscrow != missing {
		t.Errorf("MissingEscrow = %v, want %v", got.MissingEscrow, missing)
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

func TestRotationTimeout(t *testing.T) {
	deadline := statusNow.Add(10 * time.Minute)
	delivered := escrow.VolumeState{Volume: encrypted("C:"), RotationOpen: true, RotationSince: rotationAt, RotationDeadline: deadline}
	got := escrow.VolumeStatus(delivered, statusNow, grace)
	if got.Status != escrow.StatusPending || !got.Until.Equal(deadline) {
		t.Errorf("delivered rotation before its deadline = %q until %v, want pending until %v", got.Status, got.Until, deadline)
	}
	got = escrow.VolumeStatus(delivered, deadline, grace)
	if got.Status != escrow.StatusFailed || !got.Since.Equal(deadline) || !strings.Contains(got.Why, "timeout") {
		t.Errorf("delivered rotation at its deadline = %+v, want failed since the deadline for the timeout", got)
	}
	requested := delivered
	requested.RotationDeadline = time.Time{}
	if got := escrow.VolumeStatus(requested, statusNow.Add(100*time.Hour), grace); got.Status != escrow.StatusPending || !got.Until.IsZero() {
		t.Errorf("requested rotation much later = %q until %v, want pending for good: an offline device is no failure", got.Status, got.Until)
	}
	closed := delivered
	closed.RotationOpen = false
	if got := escrow.VolumeStatus(closed, deadline, grace); got.Status != escrow.StatusEscrowed {
		t.Errorf("a closed rotation's deadline = %q, want escrowed", got.Status)
	}
}

// TestStatusUntil holds Until to its definition for many generated volumes and devices: the
// status is the same at every instant before Until and failed at Until; with no Until it is
// the same a long time later.
func TestStatusUntil(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	offsets := []time.Duration{0, time.Microsecond, time.Minute, 59 * time.Minute, grace, grace + time.Microsecond, 2 * grace}
	pick := func() time.Duration { return offsets[rng.IntN(len(offsets))] }
	genVolume := func(mount string) escrow.VolumeState {
		var v escrow.Volume
		switch rng.IntN(4) {
		case 0:
			v = decrypted(mount)
		case 1:
			v = suspended(mount)
		default:
			v = encrypted(mount)
		}
		if rng.IntN(3) == 0 {
			v = encrypting(v)
		}
		if rng.IntN(2) == 0 {
			v = missingSince(v, pick())
		}
		if rng.IntN(8) == 0 {
			v = failing(v, "escrow failed")
		}
		s := escrow.VolumeState{Volume: v, Mismatch: rng.IntN(10) == 0}
		if rng.IntN(3) == 0 {
			s.RotationOpen, s.RotationSince = true, rotationAt
			if rng.IntN(2) == 0 {
				s.RotationDeadline = statusNow.Add(-grace).Add(pick())
			}
		}
		return s
	}
	device := escrow.Device{ID: "6b1f0a52-8f7e-4a57-9a0e-4f1c3f7f2d10", Name: "LT-0042", EnrolledAt: enrolledAt, ReportedAt: statusNow.Add(-time.Minute)}
	check := func(t *testing.T, what string, at func(time.Time) escrow.StatusResult) {
		t.Helper()
		r := at(statusNow)
		if r.Until.IsZero() {
			if later := at(statusNow.Add(1000 * time.Hour)); later.Status != r.Status {
				t.Fatalf("%s: %q with no Until, but %q later", what, r.Status, later.Status)
			}
			return
		}
		if r.Status != escrow.StatusPending || !r.Until.After(statusNow) {
			t.Fatalf("%s: %q until %v, want Until only on pending and after now", what, r.Status, r.Until)
		}
		if before := at(r.Until.Add(-time.Microsecond)); before.Status != r.Status {
			t.Fatalf("%s: %q at now but %q just before Until %v", what, r.Status, before.Status, r.Until)
		}
		if after := at(r.Until); after.Status != escrow.StatusFailed {
			t.Fatalf("%s: %q at Until %v, want failed", what, after.Status, r.Until)
		}
	}
	for i := range 3000 {
		vols := make([]escrow.VolumeState, 1+rng.IntN(3))
		for j := range vols {
			vols[j] = genVolume(string(rune('C'+j)) + ":")
		}
		check(t, fmt.Sprintf("volume %d %+v", i, vols[0]), func(now time.Time) escrow.StatusResult {
			return escrow.VolumeStatus(vols[0], now, grace)
		})
		check(t, fmt.Sprintf("device %d %+v", i, vols), func(now time.Time) escrow.StatusResult {
			return escrow.DeviceStatus(device, vols, now, grace)
		})
		// Before the first NextChange of its volumes, the device's whole result stays as it is.
		var next time.Time
		for _, v := range vols {
			if at := v.NextChange(statusNow, grace); !at.IsZero() && (next.IsZero() || at.Before(next)) {
				next = at
			}
		}
		last := statusNow.Add(1000 * time.Hour)
		if !next.IsZero() {
			last = next.Add(-time.Microsecond)
		}
		now, later := escrow.DeviceStatus(device, vols, statusNow, grace), escrow.DeviceStatus(device, vols, last, grace)
		if now.Status != later.Status || now.Why != later.Why || !now.Since.Equal(later.Since) || now.MissingEscrow != later.MissingEscrow {
			t.Fatalf("device %d %+v: %+v at now, %+v before the next change %v", i, vols, now, later, next)
		}
	}
}

func TestProblemAndListedFrom(t *testing.T) {
	tests := []struct {
		name   string
		result escrow.StatusResult
		want   string
		listed time.Time
	}{
		{"escrowed is never listed", escrow.StatusResult{Status: escrow.StatusEscrowed}, "", time.Time{}},
		{"notAvailable is never listed", escrow.StatusResult{Status: escrow.StatusNotAvailable}, "", time.Time{}},
		{"failed is listed from its start", escrow.StatusResult{Status: escrow.StatusFailed, Since: failureAt}, escrow.ProblemFailed, failureAt},
		{"failed without a start is listed from the beginning", escrow.StatusResult{Status: escrow.StatusFailed}, escrow.ProblemFailed, time.Unix(0, 0)},
		{"missing escrow", escrow.StatusResult{Status: escrow.StatusFailed, Since: failureAt, MissingEscrow: true}, escrow.ProblemMissingEscrow, failureAt},
		{"pending within grace is listed once past it", escrow.StatusResult{Status: escrow.StatusPending, Since: rotationAt},
			"", rotationAt.Add(grace + time.Microsecond)},
		{"pending past grace", escrow.StatusResult{Status: escrow.StatusPending, Since: statusNow.Add(-2 * grace)},
			escrow.ProblemPendingTooLong, statusNow.Add(-grace + time.Microsecond)},
		{"pending that fails before its grace ends is listed when it fails",
			escrow.StatusResult{Status: escrow.StatusPending, Since: rotationAt, Until: statusNow.Add(time.Minute)}, "", statusNow.Add(time.Minute)},
		{"pending with no start is listed when it fails", escrow.StatusResult{Status: escrow.StatusPending, Until: statusNow.Add(time.Minute)}, "", statusNow.Add(time.Minute)},
		{"pending with neither is never listed", escrow.StatusResult{Status: escrow.StatusPending}, "", time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := escrow.ProblemAt(tt.result, statusNow, grace); got != tt.want {
				t.Errorf("ProblemAt = %q, want %q", got, tt.want)
			}
			if got := escrow.ListedFrom(tt.result, grace); !got.Equal(tt.listed) {
				t.Errorf("ListedFrom = %v, want %v", got, tt.listed)
			}
		})
	}
}
