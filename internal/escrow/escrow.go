// Package escrow is Keyward's domain: devices, volumes, recovery keys, rotations, audit events,
// roles and the escrow-status rules. It imports only the standard library; every adapter
// (storage, HTTP, command line) imports it and never the other way round.
package escrow

import (
	"time"
)

// VolumeType is the kind of drive a volume is, as Windows classifies it.
type VolumeType string

// The volume types.
const (
	VolumeOperatingSystem VolumeType = "operatingSystem"
	VolumeFixedData       VolumeType = "fixedData"
	VolumeRemovable       VolumeType = "removable"
)

// Valid reports whether t is one of the volume types.
func (t VolumeType) Valid() bool {
	switch t {
	case VolumeOperatingSystem, VolumeFixedData, VolumeRemovable:
		return true
	}
	return false
}

// ProtectionStatus is whether BitLocker protection is on for a volume.
type ProtectionStatus string

// The protection statuses.
const (
	ProtectionOn  ProtectionStatus = "on"
	ProtectionOff ProtectionStatus = "off"
)

// Valid reports whether s is one of the protection statuses.
func (s ProtectionStatus) Valid() bool { return s == ProtectionOn || s == ProtectionOff }

// EncryptionStatus is a volume's conversion state as last reported by its agent.
type EncryptionStatus string

// The encryption statuses.
const (
	FullyDecrypted       EncryptionStatus = "fullyDecrypted"
	EncryptionInProgress EncryptionStatus = "encryptionInProgress"
	FullyEncrypted       EncryptionStatus = "fullyEncrypted"
	DecryptionInProgress EncryptionStatus = "decryptionInProgress"
	EncryptionPaused     EncryptionStatus = "encryptionPaused"
	DecryptionPaused     EncryptionStatus = "decryptionPaused"
)

// Valid reports whether s is one of the encryption statuses.
func (s EncryptionStatus) Valid() bool {
	switch s {
	case FullyDecrypted, EncryptionInProgress, FullyEncrypted, DecryptionInProgress, EncryptionPaused, DecryptionPaused:
		return true
	}
	return false
}

// LockStatus is whether a volume was unlocked when the agent read it (SPEC §7). The protector
// list of a locked volume is not authoritative: it may be empty or incomplete.
type LockStatus string

// The lock statuses; empty means not reported, which counts as unlocked.
const (
	Unlocked LockStatus = "unlocked"
	Locked   LockStatus = "locked"
)

// Valid reports whether s is a lock status or absent.
func (s LockStatus) Valid() bool { return s == "" || s == Unlocked || s == Locked }

// ProtectorType is the type of a BitLocker key protector.
type ProtectorType string

// The key protector types.
const (
	ProtectorRecoveryPassword ProtectorType = "recoveryPassword"
	ProtectorExternalKey      ProtectorType = "externalKey"
	ProtectorTPM              ProtectorType = "tpm"
	ProtectorTPMPin           ProtectorType = "tpmPin"
	ProtectorTPMStartupKey    ProtectorType = "tpmStartupKey"
	ProtectorTPMPinStartupKey ProtectorType = "tpmPinStartupKey"
	ProtectorPassword         ProtectorType = "password"
	ProtectorPublicKey        ProtectorType = "publicKey"
	ProtectorOther            ProtectorType = "other"
)

// Valid reports whether t is one of the protector types.
func (t ProtectorType) Valid() bool {
	switch t {
	case ProtectorRecoveryPassword, ProtectorExternalKey, ProtectorTPM, ProtectorTPMPin, ProtectorTPMStartupKey,
		ProtectorTPMPinStartupKey, ProtectorPassword, ProtectorPublicKey, ProtectorOther:
		return true
	}
	return false
}

// KeyKind is what kind of secret an escrowed key holds.
type KeyKind string

// The key kinds.
const (
	KindRecoveryPassword KeyKind = "recoveryPassword"
	KindRecoveryKey      KeyKind = "recoveryKey"
)

// Valid reports whether k is one of the key kinds.
func (k KeyKind) Valid() bool { return k == KindRecoveryPassword || k == KindRecoveryKey }

// KeyStatus is where an escrowed key is in its life.
type KeyStatus string

// The key statuses.
const (
	KeyActive     KeyStatus = "active"     // the protector is on the volume
	KeySuperseded KeyStatus = "superseded" // replaced or gone; material kept until RetainUntil
	KeyPurged     KeyStatus = "purged"     // material destroyed, metadata kept
)

// Valid reports whether s is one of the key statuses.
func (s KeyStatus) Valid() bool { return s == KeyActive || s == KeySuperseded || s == KeyPurged }

// Verification is whether the agent has proved that the escrowed password is the one on the volume.
type Verification string

// The verification states.
const (
	Unverified Verification = "unverified"
	Verified   Verification = "verified"
	Mismatch   Verification = "mismatch"
)

// Device is an enrolled Windows computer.
type Device struct {
	ID           string
	Name         string
	OwnerUPN     string
	SerialNumber string
	OSVersion    string
	Tags         []string
	EnrolledAt   time.Time
	LastSeenAt   time.Time
	ReportedAt   time.Time // zero until the first report
	// RetiredAt is when an admin retired the device (zero: in service), RetiredBy who and
	// RetireReason why. A retired device's token is refused and it leaves the compliance views.
	RetiredAt    time.Time
	RetiredBy    string
	RetireReason string
	// DisputedAt is when an admin marked the device as not to be trusted (zero: not disputed),
	// DisputedBy who and DisputeReason why. Its owner and key IDs are whatever its agent claimed,
	// so a planted look-alike can be disputed: self-service then neither lists it nor discloses
	// its keys; staff still see it, marked.
	DisputedAt    time.Time
	DisputedBy    string
	DisputeReason string
}

// Retired reports whether the device was retired.
func (d Device) Retired() bool { return !d.RetiredAt.IsZero() }

// Disputed reports whether an admin marked the device disputed.
func (d Device) Disputed() bool { return !d.DisputedAt.IsZero() }

// Protector is one key protector on a volume, as the agent reported it.
type Protector struct {
	KeyID string
	Type  ProtectorType
}

// Volume is a drive on a device. The statuses are those of the last report.
type Volume struct {
	DeviceID         string
	ID               string
	MountPoint       string
	Type             VolumeType
	ProtectionStatus ProtectionStatus // empty until reported
	EncryptionStatus EncryptionStatus // empty until reported
	LockStatus       LockStatus       // empty until reported
	Protectors       []Protector
	// Present is whether the device's last report listed the volume. A removable drive that is
	// unplugged drops out of reports; it keeps its keys but does not count towards the status.
	Present bool
	// MissingEscrowSince is when the volume was first seen with BitLocker on and no active
	// escrowed recovery password; zero while it has one.
	MissingEscrowSince time.Time
	// Failure is the open escrow or rotation failure the agent reported (or a rotation timeout),
	// cleared when an escrow or rotation for the volume next succeeds.
	Failure   string
	FailureAt time.Time
}

// Encrypted reports whether BitLocker is on for the volume: protection on, or any encryption
// state other than fully decrypted. A suspended volume (protection off, data still encrypted)
// counts as on, because its recovery password is needed again the moment protection resumes.
func (v Volume) Encrypted() bool {
	if v.ProtectionStatus == ProtectionOn {
		return true
	}
	return v.EncryptionStatus != "" && v.EncryptionStatus != FullyDecrypted
}

// ProtectorsReadable reports whether the reported protector list is authoritative: a key whose
// protector it lacks is gone from the volume. A locked volume's list is not (the agent may not
// be able to read it), and neither is an empty list on an encrypted volume (what an agent sends
// when it could not read the protectors): no key is destroyed because a drive could not be read.
func (v Volume) ProtectorsReadable() bool {
	if v.LockStatus == Locked {
		return false
	}
	return len(v.Protectors) > 0 || !v.Encrypted()
}

// RecoveryKey is one escrowed key protector. Its material is never part of this type: it is
// sealed in storage and only leaves through a disclosure, which is audited.
type RecoveryKey struct {
	KeyID          string
	DeviceID       string
	DeviceName     string
	VolumeID       string
	MountPoint     string
	VolumeType     VolumeType
	Kind           KeyKind
	Status         KeyStatus
	Verification   Verification
	VerifiedAt     time.Time
	CreatedAt      time.Time
	SupersededAt   time.Time
	RetainUntil    time.Time
	LastAccessedAt time.Time
	AccessCount    int64
	// What tells devices apart when one key ID is escrowed by several: the holding device's
	// serial number, enrollment and last contact, and whether an admin disputed it.
	DeviceSerial     string
	DeviceEnrolledAt time.Time
	DeviceLastSeenAt time.Time
	DeviceDisputed   bool
	// SharedWith lists the other devices that escrowed the same key ID, within the caller's
	// scope; SharedOutside counts those outside it.
	SharedWith    []DeviceRef
	SharedOutside int
}

// DeviceRef names a device.
type DeviceRef struct {
	ID       string
	Name     string
	Disputed bool
}

// DisclosedKey is a recovery key together with its material, the answer to a disclosure.
type DisclosedKey struct {
	RecoveryKey
	// Material is the canonical recovery password, or the recovery key as 64 upper-case hex digits.
	Material string
}

// RotationStatus is where a rotation request is in its life.
type RotationStatus string

// The rotation statuses.
const (
	RotationRequested RotationStatus = "requested"
	RotationDelivered RotationStatus = "delivered"
	RotationCompleted RotationStatus = "completed"
	RotationFailed    RotationStatus = "failed"
)

// Open reports whether the rotation still waits for the device.
func (s RotationStatus) Open() bool { return s == RotationRequested || s == RotationDelivered }

// Rotation triggers.
const (
	TriggerManual       = "manual"
	TriggerDisclosure   = "disclosure"
	TriggerRecoveryUsed = "recoveryUsed"
	TriggerMaxKeyAge    = "maxKeyAge"
)

// Rotation is a request that a device replace the recovery password of one volume.
type Rotation struct {
	ID          string
	DeviceID    string
	VolumeID    string
	KeyID       string // the key to replace; empty when the volume had none escrowed
	Status      RotationStatus
	Trigger     string
	Reason      string
	RequestedBy string
	RequestedAt time.Time
	DeliveredAt time.Time
	FinishedAt  time.Time
	NewKeyID    string
	Message     string
}

// Command types the agent carries out.
const (
	CommandRotate   = "rotateRecoveryPassword"
	CommandReEscrow = "escrowRecoveryPassword"
)

// Command is work waiting for a device.
type Command struct {
	ID       string
	Type     string
	VolumeID string
	KeyID    string
}
