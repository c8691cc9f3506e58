package escrow

import "time"

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

// NewStatusCounts returns a count for each escrow status, all zero, so that a report or a
// metric shows a status that no device is in as 0 rather than leaving it out.
func NewStatusCounts() map[EscrowStatus]int {
	return map[EscrowStatus]int{StatusEscrowed: 0, StatusPending: 0, StatusFailed: 0, StatusNotAvailable: 0}
}

// DefaultGracePeriod is how long a volume with BitLocker on may lack an escrowed recovery
// password before it counts as missing escrow.
const DefaultGracePeriod = time.Hour

// VolumeState is what the status rules need to know about one volume.
type VolumeState struct {
	Volume Volume
	// Mismatch is set when an active recovery password of the volume failed verification.
	Mismatch bool
	// RotationOpen is set while a rotation of the volume is requested or delivered;
	// RotationSince is when it was requested.
	RotationOpen  bool
	RotationSince time.Time
}

// StatusResult is an escrow status with the reason for it, for reports.
type StatusResult struct {
	Status EscrowStatus
	Why    string
	// Since is when the condition behind Status began, where it is known: the start of the
	// missing escrow, the failure, the open rotation, the enrollment not yet reported.
	Since time.Time
	// MissingEscrow marks a failure that is missing escrow rather than a reported failure.
	MissingEscrow bool
}

// VolumeStatus applies the rules of SPEC §3 to one volume; the first rule that holds wins.
func VolumeStatus(v VolumeState, now time.Time, grace time.Duration) StatusResult {
	vol := v.Volume
	if vol.ProtectionStatus == "" {
		return StatusResult{Status: StatusPending, Why: "not reported yet"}
	}
	if !vol.Encrypted() {
		return StatusResult{Status: StatusNotAvailable, Why: "BitLocker is off"}
	}
	missing := vol.MissingEscrowSince
	switch {
	case vol.Failure != "":
		return StatusResult{Status: StatusFailed, Why: vol.Failure, Since: vol.FailureAt}
	case v.Mismatch:
		return StatusResult{Status: StatusFailed, Why: "escrowed recovery password does not match the volume"}
	case !missing.IsZero() && now.Sub(missing) > grace:
		return StatusResult{Status: StatusFailed, Why: "no escrowed recovery password since " + missing.UTC().Format(time.RFC3339), Since: missing, MissingEscrow: true}
	case v.RotationOpen:
		return StatusResult{Status: StatusPending, Why: "rotation in progress", Since: v.RotationSince}
	case !missing.IsZero() && vol.EncryptionStatus == EncryptionInProgress:
		return StatusResult{Status: StatusPending, Why: "encrypting; recovery password not escrowed yet", Since: missing}
	case !missing.IsZero():
		return StatusResult{Status: StatusPending, Why: "recovery password not escrowed yet", Since: missing}
	}
	return StatusResult{Status: StatusEscrowed}
}

// DeviceStatus applies the rules of SPEC §3 to a device; volumes are those its last report
// listed (all of them, until it has reported). The first rule that holds wins.
func DeviceStatus(d Device, volumes []VolumeState, now time.Time, grace time.Duration) StatusResult {
	if d.ReportedAt.IsZero() {
		for _, v := range volumes {
			if v.Volume.Failure != "" {
				return StatusResult{Status: StatusFailed, Why: volumeWhy(v.Volume, v.Volume.Failure), Since: v.Volume.FailureAt}
			}
		}
		return StatusResult{Status: StatusPending, Why: "enrolled, not reported yet", Since: d.EnrolledAt}
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
		return StatusResult{Status: StatusNotAvailable, Why: "BitLocker is off on every volume"}
	}
	for _, want := range []EscrowStatus{StatusFailed, StatusPending} {
		for i, r := range results {
			if r.Status == want {
				r.Why = volumeWhy(volumes[i].Volume, r.Why)
				return r
			}
		}
	}
	return StatusResult{Status: StatusEscrowed}
}

func volumeWhy(v Volume, why string) string {
	name := v.MountPoint
	if name == "" {
		name = v.ID
	}
	return name + " " + why
}
