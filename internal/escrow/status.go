package escrow

import (
	"fmt"
	"time"
)

// EscrowStatus is the compliance state of a device or volume (SPEC §3).
type EscrowStatus string

// The escrow statuses, exactly as the API names them.
const (
	StatusEscrowed     EscrowStatus = "escrowed"
	StatusPending      EscrowStatus = "pending"
	StatusFailed       EscrowStatus = "failed"
	StatusNotAvailable EscrowStatus = "notAvailable"
)

// Valid reports whether s is one of the escrow statuses.
func (s EscrowStatus) Valid() bool {
	switch s {
	case StatusEscrowed, StatusPending, StatusFailed, StatusNotAvailable:
		return true
	}
	return false
}

// DefaultGracePeriod is how long a volume with BitLocker on may lack an escrowed recovery
// password before it counts as missing escrow.
const DefaultGracePeriod = time.Hour

// VolumeState is what the status rules need to know about one volume.
type VolumeState struct {
	Volume Volume
	// Mismatch is set when an active recovery password of the volume failed verification.
	Mismatch bool
	// RotationOpen is set while a rotation of the volume is requested or delivered.
	RotationOpen bool
}

// StatusResult is an escrow status with the reason for it, for reports.
type StatusResult struct {
	Status EscrowStatus
	Why    string
}

// VolumeStatus applies the rules of SPEC §3 to one volume; the first rule that holds wins.
func VolumeStatus(v VolumeState, now time.Time, grace time.Duration) StatusResult {
	vol := v.Volume
	if vol.ProtectionStatus == "" {
		return StatusResult{StatusPending, "not reported yet"}
	}
	if !vol.Encrypted() {
		return StatusResult{StatusNotAvailable, "BitLocker is off"}
	}
	switch {
	case vol.Failure != "":
		return StatusResult{StatusFailed, vol.Failure}
	case v.Mismatch:
		return StatusResult{StatusFailed, "escrowed recovery password does not match the volume"}
	case !vol.MissingEscrowSince.IsZero() && now.Sub(vol.MissingEscrowSince) > grace:
		return StatusResult{StatusFailed, fmt.Sprintf("missing escrow since %s", vol.MissingEscrowSince.UTC().Format(time.RFC3339))}
	case v.RotationOpen:
		return StatusResult{StatusPending, "rotation in progress"}
	case !vol.MissingEscrowSince.IsZero() && vol.EncryptionStatus == EncryptionInProgress:
		return StatusResult{StatusPending, "encrypting; recovery password not escrowed yet"}
	case !vol.MissingEscrowSince.IsZero():
		return StatusResult{StatusPending, "recovery password not escrowed yet"}
	}
	return StatusResult{StatusEscrowed, ""}
}

// DeviceStatus applies the rules of SPEC §3 to a device: reported says whether the device has
// sent a report; volumes are those its last report listed. The first rule that holds wins.
func DeviceStatus(reported bool, volumes []VolumeState, now time.Time, grace time.Duration) StatusResult {
	if !reported {
		for _, v := range volumes {
			if v.Volume.Failure != "" {
				return StatusResult{StatusFailed, volumeWhy(v.Volume, v.Volume.Failure)}
			}
		}
		return StatusResult{StatusPending, "enrolled, not reported yet"}
	}
	results := make([]StatusResult, len(volumes))
	allOff := true
	for i, v := range volumes {
		results[i] = VolumeStatus(v, now, grace)
		if results[i].Status != StatusNotAvailable {
			allOff = false
		}
	}
	if allOff {
		return StatusResult{StatusNotAvailable, "BitLocker is off on every volume"}
	}
	for _, want := range []EscrowStatus{StatusFailed, StatusPending} {
		for i, r := range results {
			if r.Status == want {
				return StatusResult{want, volumeWhy(volumes[i].Volume, r.Why)}
			}
		}
	}
	return StatusResult{StatusEscrowed, ""}
}

func volumeWhy(v Volume, why string) string {
	name := v.MountPoint
	if name == "" {
		name = v.ID
	}
	return name + ": " + why
}
