// Package bitlocker is the agent's edge to Windows BitLocker: the volume and key-protector types
// the agent works with, the WMI class through which it reads and changes them (WMI, one method
// for each Win32_EncryptableVolume method), the Windows event log it reads recovery unlocks from
// (EventLog), and System, which builds the agent's operations on those two, the same code on
// Windows and in every test.
//
// Only wmi_windows.go and eventlog_windows.go talk to Windows (COM and wevtapi.dll); the agent
// starts no process at all, so no password can reach a command line or PowerShell's logs. On
// other platforms the agent is driven by the simulator in bitlockersim, which implements the
// same two interfaces with Windows' return codes.
//
// Everything this package hands out as a recovery password or recovery key is key material.
// Its errors never repeat material: they name what is wrong by position (block 3) and by field
// name only.
package bitlocker

import (
	"context"
	"errors"
	"strings"
	"time"
)

// VolumeType is the kind of drive a volume is. The values are the names of SPEC §3.
type VolumeType string

// The volume types.
const (
	OperatingSystem VolumeType = "operatingSystem"
	FixedData       VolumeType = "fixedData"
	Removable       VolumeType = "removable"
)

// ProtectionStatus is whether BitLocker protection is on. Unknown is what Windows says about a
// locked volume; it is never sent to the server, which knows only on and off.
type ProtectionStatus string

// The protection statuses.
const (
	ProtectionOn      ProtectionStatus = "on"
	ProtectionOff     ProtectionStatus = "off"
	ProtectionUnknown ProtectionStatus = "unknown"
)

// EncryptionStatus is a volume's conversion state, with the names of SPEC §3. The empty value
// means unknown: Windows does not say for a locked volume.
type EncryptionStatus string

// The encryption statuses.
const (
	FullyDecrypted       EncryptionStatus = "fullyDecrypted"
	FullyEncrypted       EncryptionStatus = "fullyEncrypted"
	EncryptionInProgress EncryptionStatus = "encryptionInProgress"
	DecryptionInProgress EncryptionStatus = "decryptionInProgress"
	EncryptionPaused     EncryptionStatus = "encryptionPaused"
	DecryptionPaused     EncryptionStatus = "decryptionPaused"
)

// ProtectorType is the type of a key protector, with the names of SPEC §3.
type ProtectorType string

// The key protector types. Windows has a few more (TPM network key, AD account or group,
// unknown); they are all Other, because the server has no use for the difference.
const (
	RecoveryPassword ProtectorType = "recoveryPassword"
	ExternalKey      ProtectorType = "externalKey"
	TPM              ProtectorType = "tpm"
	TPMPin           ProtectorType = "tpmPin"
	TPMStartupKey    ProtectorType = "tpmStartupKey"
	TPMPinStartupKey ProtectorType = "tpmPinStartupKey"
	Password         ProtectorType = "password"
	PublicKey        ProtectorType = "publicKey"
	Other            ProtectorType = "other"
)

// Protector is one key protector of a volume, without its material.
type Protector struct {
	KeyID string // upper-case GUID without braces, as the server keys it
	Type  ProtectorType
}

// Volume is a drive BitLocker can protect, as last read from the system.
type Volume struct {
	// ID is the volume's unique ID as Windows gives it (\\?\Volume{GUID}\). Where the tools do
	// not give one, it is the mount point: stable enough for a drive letter, and the server
	// accepts any non-empty string.
	ID               string
	MountPoint       string // C:, or the volume path for a volume without a drive letter
	Type             VolumeType
	ProtectionStatus ProtectionStatus
	EncryptionStatus EncryptionStatus
	// Locked is true for a volume whose key is not available: its status is unknown and no
	// protector's material can be read, so the agent leaves it alone until it is unlocked.
	Locked bool
	// ProtectorsUnreadable is set for a locked volume whose protector list Windows would not
	// give: Protectors is then empty without meaning that the volume has none.
	ProtectorsUnreadable bool
	Protectors           []Protector
}

// WaitingForActivation reports whether the volume is in Device Encryption's "waiting for
// activation" state: fully encrypted with a clear key, protection off, no key protector. Its
// data is readable by anyone with the disk until a protector is added and enabled.
func (v Volume) WaitingForActivation() bool {
	return !v.Locked && v.ProtectionStatus == ProtectionOff && v.EncryptionStatus == FullyEncrypted && len(v.Protectors) == 0
}

// Encrypted reports whether BitLocker is on for the volume, by the rule the server applies:
// protection on, or any encryption state other than fully decrypted (a suspended volume is still
// encrypted, and its recovery password is needed again the moment protection resumes).
func (v Volume) Encrypted() bool {
	if v.ProtectionStatus == ProtectionOn || v.Locked {
		return true
	}
	return v.EncryptionStatus != "" && v.EncryptionStatus != FullyDecrypted
}

// Has reports whether the volume has a protector with the key ID, of any type.
func (v Volume) Has(keyID string) (Protector, bool) {
	for _, p := range v.Protectors {
		if p.KeyID == keyID {
			return p, true
		}
	}
	return Protector{}, false
}

// OfType returns the volume's protectors of type t, in the order Windows lists them.
func (v Volume) OfType(t ProtectorType) []Protector {
	var out []Protector
	for _, p := range v.Protectors {
		if p.Type == t {
			out = append(out, p)
		}
	}
	return out
}

// RecoveryUnlock is a record, from the Windows event log, that a volume was unlocked with a
// recovery password or recovery key. Windows names the protector by its GUID somewhere in the
// event's data; which field differs between events and builds, so every GUID the event holds
// is kept and the agent matches them against the protectors it knows.
type RecoveryUnlock struct {
	Log     string
	Time    time.Time
	EventID int
	GUIDs   []string // canonical key IDs found in the event's data
}

// Event IDs of unlocks with recovery material: Windows started with a recovery password or a
// recovery key (provider Microsoft-Windows-BitLocker-Driver, System log; the protector's GUID
// is in the event's data), a volume unlocked through the BitLocker API, and a volume unlocked
// in the recovery environment (the BitLocker Management log; any protector, so only recovery
// passwords count). 24652 is 0x604C, "A recovery password was used to start Windows. Protector
// ID: %5"; 24660, sometimes given for this, is "BitLocker encryption on write started".
const (
	EventBootRecoveryPassword = 24652
	EventBootRecoveryKey      = 24654
	EventVolumeUnlocked       = 782
	EventUnlockedInWinRE      = 805
)

// The logs the agent reads recovery unlocks from, and what it asks each for.
const (
	LogSystem     = "System"
	LogManagement = "Microsoft-Windows-BitLocker/BitLocker Management"
)

// RecoveryLogs are the logs and event IDs of recovery unlocks.
var RecoveryLogs = []struct {
	Log      string
	Provider string // empty for any
	IDs      []int
}{
	{LogSystem, "Microsoft-Windows-BitLocker-Driver", []int{EventBootRecoveryPassword, EventBootRecoveryKey}},
	{LogManagement, "", []int{EventVolumeUnlocked, EventUnlockedInWinRE}},
}

// EventLog reads a Windows event log forward from a bookmark. A bookmark is Windows' own
// (EvtCreateBookmark's XML): a position in the log, not a time, so events are found whatever the
// clock said when they were written (a recovery often follows a CMOS reset or a board swap, and
// the event then carries a time in the past).
type EventLog interface {
	// Events returns the events of log from provider (any when empty) with one of ids that come
	// after bookmark ("" for the start of the log), oldest first, and the bookmark after the
	// last event read (bookmark itself when there is none).
	Events(ctx context.Context, log, provider string, ids []int, bookmark string) ([]LogEvent, string, error)
}

// LogEvent is one event read from a log: its ID, when Windows says it was written, and its
// data values in order.
type LogEvent struct {
	ID   int
	Time time.Time
	Data []string
}

// BitLocker is the agent's whole view of the operating system's disk encryption. System is the
// implementation, on Windows over COM and in tests over bitlockersim.
//
// Mount points are what Volumes returns. Methods that take a key ID expect the canonical form
// (upper case, no braces). A volume or protector that does not exist gives an error wrapping
// ErrNotFound; a failed WMI method gives a *WMIError naming its return value.
type BitLocker interface {
	// Volumes lists every volume BitLocker can protect, with its protectors and lock status.
	Volumes(ctx context.Context) ([]Volume, error)
	// RecoveryPassword reads the canonical recovery password of a recovery-password protector.
	RecoveryPassword(ctx context.Context, mountPoint, keyID string) (string, error)
	// ExternalKey reads the 256-bit key of an external-key protector (the .BEK file's key).
	// Where the system does not give it out, the error wraps ErrNotReadable.
	ExternalKey(ctx context.Context, mountPoint, keyID string) ([32]byte, error)
	// AddRecoveryPassword adds a recovery-password protector, generated by Windows, and
	// returns its key ID.
	AddRecoveryPassword(ctx context.Context, mountPoint string) (keyID string, err error)
	// RemoveProtector deletes one key protector and checks that it is gone. Deleting the last
	// protector of an encrypted volume is refused (ErrLastProtector), never worked around.
	RemoveProtector(ctx context.Context, mountPoint, keyID string) error
	// AddTPMProtector adds a TPM protector to the operating-system volume unless it has one.
	AddTPMProtector(ctx context.Context, mountPoint string) error
	// EnableProtectors turns protection on (EnableKeyProtectors).
	EnableProtectors(ctx context.Context, mountPoint string) error
	// EnableEncryption starts encrypting a volume that already has the protectors it needs,
	// with the method and flags Group Policy allows.
	EnableEncryption(ctx context.Context, mountPoint string) error
	// TPMReady reports whether the TPM can protect the operating-system volume.
	TPMReady(ctx context.Context) (bool, error)
	// RecoveryUnlocks returns the unlocks with a recovery password or key recorded after the
	// bookmarks (one per log; empty for the start of the log), and the bookmarks after them:
	// every log read has an entry, empty while it holds no such event yet; a log that could
	// not be read keeps the entry it had (none if it never was read).
	RecoveryUnlocks(ctx context.Context, bookmarks map[string]string) ([]RecoveryUnlock, map[string]string, error)
}

// ErrNotFound is wrapped by errors about a volume or key protector that does not exist.
var ErrNotFound = errors.New("no such volume or key protector")

// ErrNotReadable is wrapped by errors about material the system does not give out.
var ErrNotReadable = errors.New("key material not readable on this system")

// CanonicalKeyID returns a key protector GUID the way the server keys it: 36 characters,
// upper case, without braces. It accepts the braced form Windows prints.
func CanonicalKeyID(s string) (string, error) {
	t := strings.TrimSpace(s)
	if len(t) == 38 && t[0] == '{' && t[37] == '}' {
		t = t[1:37]
	}
	if len(t) != 36 {
		return "", errors.New("key protector ID is not a GUID")
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return "", errors.New("key protector ID is not a GUID")
			}
			continue
		}
		if !isHex(c) {
			return "", errors.New("key protector ID is not a GUID")
		}
	}
	return strings.ToUpper(t), nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
