package bitlocker

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
)

// System is the agent's BitLocker built on the WMI class and the event log. Every decision
// about Windows' numbers and return values is made here, once, for the real system and the
// simulator alike.
type System struct {
	WMI    WMI
	Events EventLog
	// Policy returns the Group Policy for encrypting the operating-system volume; nil for none.
	Policy func() EncryptionPolicy
}

var _ BitLocker = (*System)(nil)

// instance finds a volume by the mount point Volumes gave it.
func (s *System) instance(ctx context.Context, mountPoint string) (EncryptableVolume, error) {
	vs, err := s.WMI.EncryptableVolumes(ctx)
	if err != nil {
		return EncryptableVolume{}, fmt.Errorf("listing the encryptable volumes: %w", err)
	}
	for _, v := range vs {
		if mountPointOf(v) == mountPoint {
			return v, nil
		}
	}
	return EncryptableVolume{}, fmt.Errorf("volume %s: %w", mountPoint, ErrNotFound)
}

func mountPointOf(v EncryptableVolume) string {
	if v.DriveLetter != "" {
		return v.DriveLetter
	}
	return v.DeviceID
}

// Volumes implements BitLocker. A locked volume is listed with what Windows says about it: its
// protection and conversion status are unknown (reported as on and fully encrypted, which a
// locked volume is), and its protectors are listed when Windows gives them, else marked
// unreadable. A volume whose lock status cannot be read fails the listing: the agent must
// not report a volume it knows nothing about as unlocked.
func (s *System) Volumes(ctx context.Context) ([]Volume, error) {
	vs, err := s.WMI.EncryptableVolumes(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing the encryptable volumes: %w", err)
	}
	out := make([]Volume, 0, len(vs))
	for _, ev := range vs {
		v, err := s.volume(ctx, ev)
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", mountPointOf(ev), err)
		}
		out = append(out, v)
	}
	return out, nil
}

func (s *System) volume(ctx context.Context, ev EncryptableVolume) (Volume, error) {
	v := Volume{ID: ev.DeviceID, MountPoint: mountPointOf(ev), Type: volumeType(ev.VolumeType)}
	lock, err := s.WMI.GetLockStatus(ctx, ev.DeviceID)
	if err != nil {
		return Volume{}, err
	}
	v.Locked = lock == LockStatusLocked
	prot, err := s.WMI.GetProtectionStatus(ctx, ev.DeviceID)
	switch {
	case err != nil && !v.Locked:
		return Volume{}, err
	case v.Locked || prot == ProtectionStatusUnknown:
		v.ProtectionStatus = ProtectionOn
	case prot == ProtectionStatusOn:
		v.ProtectionStatus = ProtectionOn
	default:
		v.ProtectionStatus = ProtectionOff
	}
	conv, err := s.WMI.GetConversionStatus(ctx, ev.DeviceID)
	switch {
	case err != nil && !v.Locked:
		return Volume{}, err
	case err != nil:
		v.EncryptionStatus = FullyEncrypted
	default:
		if v.EncryptionStatus, err = conversionStatus(conv); err != nil {
			return Volume{}, err
		}
	}
	ids, err := s.WMI.GetKeyProtectors(ctx, ev.DeviceID)
	if err != nil {
		if v.Locked {
			v.ProtectorsUnreadable = true
			return v, nil
		}
		return Volume{}, err
	}
	for _, raw := range ids {
		id, err := CanonicalKeyID(raw)
		if err != nil {
			return Volume{}, fmt.Errorf("GetKeyProtectors: %w", err)
		}
		t, err := s.WMI.GetKeyProtectorType(ctx, ev.DeviceID, braced(id))
		if err != nil {
			if errors.Is(err, ErrNotFound) || errors.Is(err, E_INVALIDARG) {
				continue // deleted between the two calls
			}
			if v.Locked {
				v.Protectors, v.ProtectorsUnreadable = nil, true
				return v, nil
			}
			return Volume{}, err
		}
		v.Protectors = append(v.Protectors, Protector{KeyID: id, Type: protectorType(t)})
	}
	return v, nil
}

func braced(keyID string) string { return "{" + keyID + "}" }

func volumeType(t uint32) VolumeType {
	switch t {
	case VolumeTypeOperatingSystem:
		return OperatingSystem
	case VolumeTypeRemovable:
		return Removable
	}
	return FixedData
}

func conversionStatus(c uint32) (EncryptionStatus, error) {
	switch c {
	case ConversionFullyDecrypted:
		return FullyDecrypted, nil
	case ConversionFullyEncrypted:
		return FullyEncrypted, nil
	case ConversionEncryptionInProgress:
		return EncryptionInProgress, nil
	case ConversionDecryptionInProgress:
		return DecryptionInProgress, nil
	case ConversionEncryptionPaused:
		return EncryptionPaused, nil
	case ConversionDecryptionPaused:
		return DecryptionPaused, nil
	}
	return "", fmt.Errorf("GetConversionStatus: unknown ConversionStatus %d", c)
}

// ProtectorTypeOf maps a KeyProtectorType to the server's protector type.
func ProtectorTypeOf(t uint32) ProtectorType {
	return protectorType(t)
}

func protectorType(t uint32) ProtectorType {
	switch t {
	case KeyProtectorTPM:
		return TPM
	case KeyProtectorExternalKey:
		return ExternalKey
	case KeyProtectorNumericalPassword:
		return RecoveryPassword
	case KeyProtectorTPMPin:
		return TPMPin
	case KeyProtectorTPMStartupKey:
		return TPMStartupKey
	case KeyProtectorTPMPinStartupKey:
		return TPMPinStartupKey
	case KeyProtectorPublicKey:
		return PublicKey
	case KeyProtectorPassphrase:
		return Password
	}
	return Other
}

// protectorOf checks that a protector exists and has type want, as GetKeyProtectorType says.
func (s *System) protectorOf(ctx context.Context, mountPoint, keyID string, want uint32) (EncryptableVolume, error) {
	ev, err := s.instance(ctx, mountPoint)
	if err != nil {
		return ev, err
	}
	t, err := s.WMI.GetKeyProtectorType(ctx, ev.DeviceID, braced(keyID))
	if errors.Is(err, E_INVALIDARG) {
		return ev, fmt.Errorf("protector %s: %w", keyID, ErrNotFound) // an ID the volume does not have
	}
	if err != nil {
		return ev, err
	}
	if t != want {
		return ev, fmt.Errorf("protector %s is a %s, not a %s", keyID, protectorType(t), protectorType(want))
	}
	return ev, nil
}

// RecoveryPassword implements BitLocker.
func (s *System) RecoveryPassword(ctx context.Context, mountPoint, keyID string) (string, error) {
	ev, err := s.protectorOf(ctx, mountPoint, keyID, KeyProtectorNumericalPassword)
	if err != nil {
		return "", err
	}
	pw, err := s.WMI.GetKeyProtectorNumericalPassword(ctx, ev.DeviceID, braced(keyID))
	if err != nil {
		return "", err
	}
	return ParsePassword(pw)
}

// ExternalKey implements BitLocker.
func (s *System) ExternalKey(ctx context.Context, mountPoint, keyID string) ([32]byte, error) {
	var key [32]byte
	ev, err := s.protectorOf(ctx, mountPoint, keyID, KeyProtectorExternalKey)
	if err != nil {
		return key, err
	}
	b, err := s.WMI.GetKeyProtectorExternalKey(ctx, ev.DeviceID, braced(keyID))
	defer clear(b)
	switch {
	case errors.Is(err, FVE_E_FIPS_PREVENTS_EXTERNAL_KEY_EXPORT) || errors.Is(err, ErrLocked):
		return key, fmt.Errorf("protector %s: %w: %w", keyID, ErrNotReadable, err)
	case err != nil:
		return key, err
	case len(b) != len(key):
		return key, fmt.Errorf("protector %s: GetKeyProtectorExternalKey gave %d bytes, want 32", keyID, len(b))
	}
	copy(key[:], b)
	return key, nil
}

// AddRecoveryPassword implements BitLocker.
func (s *System) AddRecoveryPassword(ctx context.Context, mountPoint string) (string, error) {
	ev, err := s.instance(ctx, mountPoint)
	if err != nil {
		return "", err
	}
	raw, err := s.WMI.ProtectKeyWithNumericalPassword(ctx, ev.DeviceID)
	if err != nil {
		return "", err
	}
	id, err := CanonicalKeyID(raw)
	if err != nil {
		return "", fmt.Errorf("ProtectKeyWithNumericalPassword: %w", err)
	}
	return id, nil
}

// RemoveProtector implements BitLocker: DeleteKeyProtector's return value is checked, and the
// protector list read again to see the protector gone.
func (s *System) RemoveProtector(ctx context.Context, mountPoint, keyID string) error {
	ev, err := s.instance(ctx, mountPoint)
	if err != nil {
		return err
	}
	if err := s.WMI.DeleteKeyProtector(ctx, ev.DeviceID, braced(keyID)); err != nil {
		if errors.Is(err, E_INVALIDARG) {
			return fmt.Errorf("protector %s: %w", keyID, ErrNotFound)
		}
		return err
	}
	ids, err := s.WMI.GetKeyProtectors(ctx, ev.DeviceID)
	if err != nil {
		return fmt.Errorf("checking that protector %s is gone: %w", keyID, err)
	}
	if slices.ContainsFunc(ids, func(raw string) bool { c, _ := CanonicalKeyID(raw); return c == keyID }) {
		return fmt.Errorf("DeleteKeyProtector returned success but protector %s is still on the volume", keyID)
	}
	return nil
}

// AddTPMProtector implements BitLocker.
func (s *System) AddTPMProtector(ctx context.Context, mountPoint string) error {
	ev, err := s.instance(ctx, mountPoint)
	if err != nil {
		return err
	}
	ids, err := s.WMI.GetKeyProtectors(ctx, ev.DeviceID)
	if err != nil {
		return err
	}
	for _, id := range ids {
		t, err := s.WMI.GetKeyProtectorType(ctx, ev.DeviceID, id)
		if err != nil {
			return err
		}
		switch t {
		case KeyProtectorTPM, KeyProtectorTPMPin, KeyProtectorTPMStartupKey, KeyProtectorTPMPinStartupKey:
			return nil
		}
	}
	_, err = s.WMI.ProtectKeyWithTPM(ctx, ev.DeviceID)
	return err
}

// EnableProtectors implements BitLocker.
func (s *System) EnableProtectors(ctx context.Context, mountPoint string) error {
	ev, err := s.instance(ctx, mountPoint)
	if err != nil {
		return err
	}
	return s.WMI.EnableKeyProtectors(ctx, ev.DeviceID)
}

// EnableEncryption implements BitLocker.
func (s *System) EnableEncryption(ctx context.Context, mountPoint string) error {
	ev, err := s.instance(ctx, mountPoint)
	if err != nil {
		return err
	}
	var p EncryptionPolicy
	if s.Policy != nil {
		p = s.Policy()
	}
	method, flags := EncryptArgs(p)
	return s.WMI.Encrypt(ctx, ev.DeviceID, method, flags)
}

// TPMReady implements BitLocker.
func (s *System) TPMReady(ctx context.Context) (bool, error) { return s.WMI.TPMReady(ctx) }

// RecoveryUnlocks implements BitLocker. A log that cannot be read keeps its bookmark and makes
// the call fail after the other logs were read, so nothing read is lost.
func (s *System) RecoveryUnlocks(ctx context.Context, bookmarks map[string]string) ([]RecoveryUnlock, map[string]string, error) {
	next := map[string]string{}
	for k, v := range bookmarks {
		next[k] = v
	}
	var out []RecoveryUnlock
	var errs []error
	for _, l := range RecoveryLogs {
		evs, bm, err := s.Events.Events(ctx, l.Log, l.Provider, l.IDs, bookmarks[l.Log])
		if err != nil {
			errs = append(errs, fmt.Errorf("reading the %s log: %w", l.Log, err))
			continue
		}
		next[l.Log] = bm
		for _, e := range evs {
			out = append(out, RecoveryUnlock{Log: l.Log, Time: e.Time, EventID: e.ID, GUIDs: guidsIn(e.Data)})
		}
	}
	return out, next, errors.Join(errs...)
}

var anyGUID = regexp.MustCompile(`[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}`)

// guidsIn returns every GUID in an event's data values, canonical, without repeats.
func guidsIn(data []string) []string {
	var out []string
	for _, d := range data {
		for _, g := range anyGUID.FindAllString(d, -1) {
			if c, err := CanonicalKeyID(g); err == nil && !slices.Contains(out, c) {
				out = append(out, c)
			}
		}
	}
	return out
}

// Redact removes anything shaped like key material from a message (a message of Windows or of
// a server), so the message can go into an error, an event and the log.
func Redact(s string) string {
	return materialLike.ReplaceAllString(s, "[redacted]")
}

// materialLike matches what could be key material or a part of it: two or more groups of six
// digits or a run of twelve or more digits (a recovery password), and a run of 40 or more hex
// digits (a recovery key). Shorter runs, such as the HRESULTs and GUIDs that make a message
// useful, stay readable.
var materialLike = regexp.MustCompile(`[0-9]{6}(?:[- ]?[0-9]{6})+|[0-9A-Fa-f]{40,}`)
