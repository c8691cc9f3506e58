package bitlocker

import (
	"context"
	"errors"
	"fmt"
)

// WMI is the Win32_EncryptableVolume class of the root\CIMV2\Security\MicrosoftVolumeEncryption
// namespace: the methods the agent calls, one for one, with Windows' numbers for statuses and
// types. It is the whole of the operating system's edge for BitLocker: the Windows
// implementation calls the class over COM (wmi_windows.go), and bitlockersim implements it in
// memory for every test of the agent.
//
// A method whose ReturnValue is not 0 returns a *WMIError with that value, which errors.Is
// matches against the named codes below (ErrLastProtector, ...) and against ErrNotFound,
// ErrLocked and ErrAccessDenied where they apply. Other errors are failures to reach WMI at all.
//
// deviceID is the volume's DeviceID (\\?\Volume{GUID}\); key protector IDs are in the braced
// form Windows uses ({GUID}).
type WMI interface {
	// EncryptableVolumes lists the class's instances.
	EncryptableVolumes(ctx context.Context) ([]EncryptableVolume, error)
	GetConversionStatus(ctx context.Context, deviceID string) (uint32, error)
	GetProtectionStatus(ctx context.Context, deviceID string) (uint32, error)
	GetLockStatus(ctx context.Context, deviceID string) (uint32, error)
	// GetKeyProtectors returns the IDs of every key protector (KeyProtectorType 0).
	GetKeyProtectors(ctx context.Context, deviceID string) ([]string, error)
	GetKeyProtectorType(ctx context.Context, deviceID, keyID string) (uint32, error)
	// GetKeyProtectorNumericalPassword returns a recovery password. Key material.
	GetKeyProtectorNumericalPassword(ctx context.Context, deviceID, keyID string) (string, error)
	// GetKeyProtectorExternalKey returns an external key's 32 bytes. Key material.
	GetKeyProtectorExternalKey(ctx context.Context, deviceID, keyID string) ([]byte, error)
	// ProtectKeyWithNumericalPassword adds a recovery password that Windows generates (the
	// NumericalPassword parameter is left empty, so no password is ever passed into WMI) and
	// returns its key protector ID.
	ProtectKeyWithNumericalPassword(ctx context.Context, deviceID string) (string, error)
	// ProtectKeyWithTPM adds a TPM protector with the default platform validation profile.
	ProtectKeyWithTPM(ctx context.Context, deviceID string) (string, error)
	DeleteKeyProtector(ctx context.Context, deviceID, keyID string) error
	// EnableKeyProtectors turns protection on (and removes the clear key of a volume waiting
	// for activation).
	EnableKeyProtectors(ctx context.Context, deviceID string) error
	// Encrypt starts encrypting with an EncryptionMethod and EncryptionFlags (see EncryptArgs).
	Encrypt(ctx context.Context, deviceID string, method, flags uint32) error
	// TPMReady is Win32_Tpm.IsReady (root\CIMV2\Security\MicrosoftTpm): false when there is no
	// TPM or it is not ready for BitLocker (off, not owned, in reduced functionality).
	TPMReady(ctx context.Context) (bool, error)
}

// EncryptableVolume is the identity of one Win32_EncryptableVolume instance.
type EncryptableVolume struct {
	DeviceID    string // \\?\Volume{GUID}\
	DriveLetter string // C:, or empty for a volume without one
	VolumeType  uint32 // VolumeType* (Windows 8 and later)
}

// Win32_EncryptableVolume's numbers.
const (
	VolumeTypeOperatingSystem = 0
	VolumeTypeFixedData       = 1
	VolumeTypeRemovable       = 2

	ProtectionStatusOff     = 0
	ProtectionStatusOn      = 1
	ProtectionStatusUnknown = 2

	LockStatusUnlocked = 0
	LockStatusLocked   = 1

	ConversionFullyDecrypted       = 0
	ConversionFullyEncrypted       = 1
	ConversionEncryptionInProgress = 2
	ConversionDecryptionInProgress = 3
	ConversionEncryptionPaused     = 4
	ConversionDecryptionPaused     = 5

	KeyProtectorUnknown             = 0
	KeyProtectorTPM                 = 1
	KeyProtectorExternalKey         = 2
	KeyProtectorNumericalPassword   = 3
	KeyProtectorTPMPin              = 4
	KeyProtectorTPMStartupKey       = 5
	KeyProtectorTPMPinStartupKey    = 6
	KeyProtectorPublicKey           = 7
	KeyProtectorPassphrase          = 8
	KeyProtectorTPMCertificate      = 9
	KeyProtectorCryptoAPINextGenCNG = 10
)

// HRESULT is a ReturnValue of a Win32_EncryptableVolume method (or of the COM call). The named
// values are those the documentation of the methods the agent calls lists.
type HRESULT uint32

// The return values the agent tells apart. Their names are Windows' (winerror.h).
const (
	E_ACCESSDENIED                          HRESULT = 0x80070005
	E_INVALIDARG                            HRESULT = 0x80070057
	WBEM_E_ACCESS_DENIED                    HRESULT = 0x80041003
	WBEM_E_INVALID_NAMESPACE                HRESULT = 0x8004100E
	FVE_E_LOCKED_VOLUME                     HRESULT = 0x80310000
	FVE_E_NOT_ENCRYPTED                     HRESULT = 0x80310001
	FVE_E_NOT_ACTIVATED                     HRESULT = 0x80310008
	FVE_E_ACTION_NOT_ALLOWED                HRESULT = 0x80310009
	FVE_E_TPM_NOT_OWNED                     HRESULT = 0x80310018
	FVE_E_KEY_REQUIRED                      HRESULT = 0x8031001D
	FVE_E_VOLUME_BOUND_ALREADY              HRESULT = 0x8031001F
	FVE_E_NOT_OS_VOLUME                     HRESULT = 0x80310028
	FVE_E_CANNOT_ENCRYPT_NO_KEY             HRESULT = 0x8031002E
	FVE_E_BOOTABLE_CDDVD                    HRESULT = 0x80310030
	FVE_E_PROTECTOR_EXISTS                  HRESULT = 0x80310031
	FVE_E_PROTECTOR_NOT_FOUND               HRESULT = 0x80310033
	FVE_E_INVALID_PASSWORD_FORMAT           HRESULT = 0x80310035
	FVE_E_FIPS_PREVENTS_RECOVERY_PASSWORD   HRESULT = 0x80310037
	FVE_E_NOT_DECRYPTED                     HRESULT = 0x80310039
	FVE_E_INVALID_PROTECTOR_TYPE            HRESULT = 0x8031003A
	TBS_E_SERVICE_NOT_RUNNING               HRESULT = 0x80284008
	TPM_E_DEACTIVATED                       HRESULT = 0x80280006
	FVE_E_FIPS_PREVENTS_EXTERNAL_KEY_EXPORT HRESULT = 0x80310038
)

// hresultText names each known value and says what it means for the agent. The text goes to
// the server in escrowFailed and rotationFailed events, so an administrator reads the cause
// without the Windows documentation at hand.
var hresultText = map[HRESULT][2]string{
	E_ACCESSDENIED:                          {"E_ACCESSDENIED", "access denied (the agent must run as SYSTEM or an administrator)"},
	E_INVALIDARG:                            {"E_INVALIDARG", "a parameter is not valid (for Encrypt: the encryption method or flags conflict with Group Policy)"},
	WBEM_E_ACCESS_DENIED:                    {"WBEM_E_ACCESS_DENIED", "access to the BitLocker WMI namespace denied (the agent must run as SYSTEM or an administrator)"},
	WBEM_E_INVALID_NAMESPACE:                {"WBEM_E_INVALID_NAMESPACE", "the BitLocker WMI namespace is missing (BitLocker is not available on this edition or system)"},
	FVE_E_LOCKED_VOLUME:                     {"FVE_E_LOCKED_VOLUME", "the volume is locked"},
	FVE_E_NOT_ENCRYPTED:                     {"FVE_E_NOT_ENCRYPTED", "the volume is not encrypted"},
	FVE_E_NOT_ACTIVATED:                     {"FVE_E_NOT_ACTIVATED", "BitLocker is not turned on for the volume"},
	FVE_E_ACTION_NOT_ALLOWED:                {"FVE_E_ACTION_NOT_ALLOWED", "the volume's state does not allow this now (an encryption or decryption under way?)"},
	FVE_E_TPM_NOT_OWNED:                     {"FVE_E_TPM_NOT_OWNED", "the TPM is not owned"},
	FVE_E_KEY_REQUIRED:                      {"FVE_E_KEY_REQUIRED", "the last key protector of an encrypted volume cannot be deleted"},
	FVE_E_VOLUME_BOUND_ALREADY:              {"FVE_E_VOLUME_BOUND_ALREADY", "the protector is used to unlock the volume automatically and cannot be deleted"},
	FVE_E_NOT_OS_VOLUME:                     {"FVE_E_NOT_OS_VOLUME", "only the operating-system volume can have a TPM protector"},
	FVE_E_CANNOT_ENCRYPT_NO_KEY:             {"FVE_E_CANNOT_ENCRYPT_NO_KEY", "no key protector: encryption cannot start"},
	FVE_E_BOOTABLE_CDDVD:                    {"FVE_E_BOOTABLE_CDDVD", "a bootable CD or DVD is in the drive; remove it and restart"},
	FVE_E_PROTECTOR_EXISTS:                  {"FVE_E_PROTECTOR_EXISTS", "the volume already has a protector of this type"},
	FVE_E_PROTECTOR_NOT_FOUND:               {"FVE_E_PROTECTOR_NOT_FOUND", "no such key protector on the volume"},
	FVE_E_INVALID_PASSWORD_FORMAT:           {"FVE_E_INVALID_PASSWORD_FORMAT", "the recovery password's format is not valid"},
	FVE_E_FIPS_PREVENTS_RECOVERY_PASSWORD:   {"FVE_E_FIPS_PREVENTS_RECOVERY_PASSWORD", "FIPS mode does not allow recovery passwords on this system"},
	FVE_E_FIPS_PREVENTS_EXTERNAL_KEY_EXPORT: {"FVE_E_FIPS_PREVENTS_EXTERNAL_KEY_EXPORT", "FIPS mode does not allow external keys to be read"},
	FVE_E_NOT_DECRYPTED:                     {"FVE_E_NOT_DECRYPTED", "the volume is not fully decrypted"},
	FVE_E_INVALID_PROTECTOR_TYPE:            {"FVE_E_INVALID_PROTECTOR_TYPE", "the key protector is not of the type this method reads"},
	TBS_E_SERVICE_NOT_RUNNING:               {"TBS_E_SERVICE_NOT_RUNNING", "no TPM (the TPM Base Services are not running)"},
	TPM_E_DEACTIVATED:                       {"TPM_E_DEACTIVATED", "the TPM is deactivated"},
}

// Error implements error, naming the value: "0x8031001D FVE_E_KEY_REQUIRED (the last ...)".
func (h HRESULT) Error() string {
	if t, ok := hresultText[h]; ok {
		return fmt.Sprintf("0x%08X %s (%s)", uint32(h), t[0], t[1])
	}
	return fmt.Sprintf("0x%08X", uint32(h))
}

// WMIError is a Win32_EncryptableVolume method that returned a ReturnValue other than 0.
type WMIError struct {
	Method string
	Code   HRESULT
	// COM is set when the COM call itself failed (an exception naming Code), rather than the
	// method returning Code as its ReturnValue.
	COM bool
}

func (e *WMIError) Error() string { return e.Method + ": " + e.Code.Error() }

// Unwrap makes errors.Is(err, FVE_E_KEY_REQUIRED) and errors.As(err, &hresult) work.
func (e *WMIError) Unwrap() error { return e.Code }

// Is matches the named errors of the package: ErrNotFound, ErrLocked, ErrAccessDenied and
// ErrLastProtector.
func (e *WMIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Code == FVE_E_PROTECTOR_NOT_FOUND
	case ErrLocked:
		return e.Code == FVE_E_LOCKED_VOLUME
	case ErrAccessDenied:
		return e.Code == E_ACCESSDENIED || e.Code == WBEM_E_ACCESS_DENIED
	case ErrLastProtector:
		return e.Code == FVE_E_KEY_REQUIRED
	}
	return false
}

// ReturnValue turns a method's ReturnValue into nil or a *WMIError.
func ReturnValue(method string, v uint32) error {
	if v == 0 {
		return nil
	}
	return &WMIError{Method: method, Code: HRESULT(v)}
}

// Named errors the agent acts on; WMIErrors match them by code.
var (
	ErrLocked        = errors.New("the volume is locked")
	ErrAccessDenied  = errors.New("access denied")
	ErrLastProtector = errors.New("the last key protector cannot be deleted")
)

// EncryptionPolicy is what Group Policy (HKLM\SOFTWARE\Policies\Microsoft\FVE) says about
// encrypting the operating-system volume; zero values mean not configured.
type EncryptionPolicy struct {
	// EncryptionMethodWithXtsOs: 3 AES-CBC 128, 4 AES-CBC 256, 6 XTS-AES 128, 7 XTS-AES 256.
	EncryptionMethod uint32
	// OSEncryptionType: 0 user's choice, 1 full encryption, 2 used space only.
	OSEncryptionType uint32
}

// Encrypt's EncryptionFlags value for used-space-only encryption, and its default method.
const (
	EncryptDataOnly           = 0x1
	EncryptionMethodXTSAES128 = 6
)

// EncryptArgs returns the EncryptionMethod and EncryptionFlags for Encrypt under a policy.
// Passing what the policy forbids fails with E_INVALIDARG, so the policy decides; without one
// the agent takes Windows' default method and full encryption, which also covers data deleted
// before encryption.
func EncryptArgs(p EncryptionPolicy) (method, flags uint32) {
	method = EncryptionMethodXTSAES128
	switch p.EncryptionMethod {
	case 3, 4, 6, 7:
		method = p.EncryptionMethod
	}
	if p.OSEncryptionType == 2 {
		flags = EncryptDataOnly
	}
	return method, flags
}

// IsHomeEdition reports whether an EditionID (HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion)
// is a Windows Home edition, which has Device Encryption but cannot turn BitLocker on.
func IsHomeEdition(edition string) bool {
	switch edition {
	case "Core", "CoreN", "CoreSingleLanguage", "CoreCountrySpecific":
		return true
	}
	return false
}
