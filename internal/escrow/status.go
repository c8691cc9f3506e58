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
	// RotationDeadline is when an open rotation that the device has fetched times out (its
	// delivery plus the rotation timeout); zero while it is only requested, because an offline
	// device is not a failure (SPEC §4).
	RotationDeadline time.Time
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
	// Until is the first instant at which Status becomes failed by itself if nothing else
	// changes: a grace period or a rotation timeout running out. Zero when the status does not
	// change with time (failed is only left through a change: an escrow, a report, a rotation).
	// Times are kept to the microsecond, so "longer than the grace period" begins one
	// microsecond after it.
	Until time.Time
}

// ProblemAt says why an escrow report at now lists a device whose status at now is r ("" when
// it does not): failed, missing escrow, or pending for longer than the grace period.
func ProblemAt(r StatusResult, now time.Time, grace time.Duration) string {
	switch {
	case r.Status == StatusFailed && r.MissingEscrow:
		return ProblemMissingEscrow
	case r.Status == StatusFailed:
		return ProblemFailed
	case r.Status == StatusPending && !r.Since.IsZero() && now.Sub(r.Since) > grace:
		return ProblemPendingTooLong
	}
	return ""
}

// ListedFrom is the first instant at which an escrow report lists a device whose status is r,
// given that nothing changes meanwhile; zero when it is never listed. A failed device is listed
// from the start of its failure (the zero Unix time when that is not known), so a report that
// orders by this instant puts the longest-standing problems first.
func ListedFrom(r StatusResult, grace time.Duration) time.Time {
	switch r.Status {
	case StatusFailed:
		if r.Since.IsZero() {
			return time.Unix(0, 0).UTC()
		}
		return r.Since
	case StatusPending:
		var at time.Time
		if !r.Since.IsZero() {
			at = r.Since.Add(grace + time.Microsecond)
		}
		return earliest(at, r.Until)
	}
	return time.Time{}
}

// earliest is the earlier of two instants, where zero means never.
func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}

// NextChange is the first instant after now at which one of the volume's time rules crosses:
// its grace period ending, its rotation's deadline; zero when none is ahead. The result of the
// rules for the volume (its status, or the reason of a failure) can change by itself only
// there, so a stored result is good until then.
func (v VolumeState) NextChange(now time.Time, grace time.Duration) time.Time {
	var at time.Time
	if m := v.Volume.MissingEscrowSince; !m.IsZero() {
		if t := m.Add(grace + time.Microsecond); t.After(now) {
			at = t
		}
	}
	if v.RotationOpen && v.RotationDeadline.After(now) {
		at = earliest(at, v.RotationDeadline)
	}
	return at
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
	// When missing escrow turns into a failure: one microsecond past the grace period.
	var missingUntil time.Time
	if !missing.IsZero() {
		missingUntil = missing.Add(grace + time.Microsecond)
	}
	var rotationUntil time.Time
	if v.RotationOpen {
		rotationUntil = v.RotationDeadline
	}
	switch {
	case vol.Failure != "":
		return StatusResult{Status: StatusFailed, Why: vol.Failure, Since: vol.FailureAt}
	case v.Mismatch:
		return StatusResult{Status: StatusFailed, Why: "escrowed recovery password does not match the volume"}
	case !missing.IsZero() && now.Sub(missing) > grace:
		return StatusResult{Status: StatusFailed, Why: "no escrowed recovery password since " + missing.UTC().Format(time.RFC3339), Since: missing, MissingEscrow: true}
	case !rotationUntil.IsZero() && !now.Before(rotationUntil):
		// The background job records this as a failed rotation; until it has run, the rule
		// says the same, so no status depends on when the job last ran.
		return StatusResult{Status: StatusFailed, Why: "rotation not completed within the rotation timeout", Since: rotationUntil}
	case v.RotationOpen:
		return StatusResult{Status: StatusPending, Why: "rotation in progress", Since: v.RotationSince, Until: earliest(missingUntil, rotationUntil)}
	case !missing.IsZero() && vol.EncryptionStatus == EncryptionInProgress:
		return StatusResult{Status: StatusPending, Why: "encrypting; recovery password not escrowed yet", Since: missing, Until: missingUntil}
	case !missing.IsZero():
		return StatusResult{Status: StatusPending, Why: "recovery password not escrowed yet", Since: missing, Until: missingUntil}
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
	for i, r := range results {
		if r.Status == StatusFailed {
			r.Why = volumeWhy(volumes[i].Volume, r.Why)
			return r
		}
	}
	for i, r := range results {
		if r.Status == StatusPending {
			r.Why = volumeWhy(volumes[i].Volume, r.Why)
			// The device fails as soon as any of its pending volumes does.
			for _, o := range results[i+1:] {
				r.Until = earliest(r.Until, o.Until)
			}
			return r
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
