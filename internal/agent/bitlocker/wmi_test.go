package bitlocker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/agent/agenttest"
	"github.com/keyward/keyward/internal/agent/bitlocker"
)

// recordedWMI answers the read methods of Win32_EncryptableVolume from a recorded
// `Get-BitLockerVolume | ConvertTo-Json` (windows-outputs.md 3a), whose integers are the
// class's own numbers (VolumeStatus is GetConversionStatus's ConversionStatus, and so on).
type recordedWMI struct {
	vols []struct {
		MountPoint                                             string
		VolumeStatus, ProtectionStatus, LockStatus, VolumeType uint32
		KeyProtector                                           []struct {
			KeyProtectorID   string `json:"KeyProtectorId"`
			KeyProtectorType uint32
			RecoveryPassword string
		}
	}
}

var errNotRecorded = errors.New("not in the recording")

func (r *recordedWMI) vol(id string) (int, error) {
	for i, v := range r.vols {
		if `\\?\Volume{`+v.MountPoint+`}\` == id {
			return i, nil
		}
	}
	return 0, errNotRecorded
}

func (r *recordedWMI) EncryptableVolumes(context.Context) ([]bitlocker.EncryptableVolume, error) {
	var out []bitlocker.EncryptableVolume
	for _, v := range r.vols {
		out = append(out, bitlocker.EncryptableVolume{DeviceID: `\\?\Volume{` + v.MountPoint + `}\`, DriveLetter: v.MountPoint, VolumeType: v.VolumeType})
	}
	return out, nil
}

func (r *recordedWMI) field(id string, f func(i int) uint32) (uint32, error) {
	i, err := r.vol(id)
	if err != nil {
		return 0, err
	}
	return f(i), nil
}

func (r *recordedWMI) GetConversionStatus(_ context.Context, id string) (uint32, error) {
	return r.field(id, func(i int) uint32 { return r.vols[i].VolumeStatus })
}
func (r *recordedWMI) GetProtectionStatus(_ context.Context, id string) (uint32, error) {
	return r.field(id, func(i int) uint32 { return r.vols[i].ProtectionStatus })
}
func (r *recordedWMI) GetLockStatus(_ context.Context, id string) (uint32, error) {
	return r.field(id, func(i int) uint32 { return r.vols[i].LockStatus })
}
func (r *recordedWMI) GetKeyProtectors(_ context.Context, id string) ([]string, error) {
	i, err := r.vol(id)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, p := range r.vols[i].KeyProtector {
		ids = append(ids, p.KeyProtectorID)
	}
	return ids, nil
}
func (r *recordedWMI) protector(id, keyID string) (int, int, error) {
	i, err := r.vol(id)
	if err != nil {
		return 0, 0, err
	}
	for j, p := range r.vols[i].KeyProtector {
		if strings.EqualFold(p.KeyProtectorID, keyID) {
			return i, j, nil
		}
	}
	return 0, 0, bitlocker.ReturnValue("GetKeyProtectorType", uint32(bitlocker.E_INVALIDARG))
}
func (r *recordedWMI) GetKeyProtectorType(_ context.Context, id, keyID string) (uint32, error) {
	i, j, err := r.protector(id, keyID)
	if err != nil {
		return 0, err
	}
	return r.vols[i].KeyProtector[j].KeyProtectorType, nil
}
func (r *recordedWMI) GetKeyProtectorNumericalPassword(_ context.Context, id, keyID string) (string, error) {
	i, j, err := r.protector(id, keyID)
	if err != nil {
		return "", err
	}
	return r.vols[i].KeyProtector[j].RecoveryPassword, nil
}
func (r *recordedWMI) GetKeyProtectorExternalKey(context.Context, string, string) ([]byte, error) {
	return nil, errNotRecorded
}
func (r *recordedWMI) ProtectKeyWithNumericalPassword(context.Context, string) (string, error) {
	return "", errNotRecorded
}
func (r *recordedWMI) ProtectKeyWithTPM(context.Context, string) (string, error) {
	return "", errNotRecorded
}
func (r *recordedWMI) DeleteKeyProtector(context.Context, string, string) error {
	return errNotRecorded
}
func (r *recordedWMI) EnableKeyProtectors(context.Context, string) error     { return errNotRecorded }
func (r *recordedWMI) Encrypt(context.Context, string, uint32, uint32) error { return errNotRecorded }
func (r *recordedWMI) TPMReady(context.Context) (bool, error)                { return false, errNotRecorded }

// System reads Windows' numbers as a real capture has them.
func TestSystemReadsRecordedVolumes(t *testing.T) {
	r := &recordedWMI{}
	if err := json.Unmarshal([]byte(agenttest.Output(t, "3a", 0)), &r.vols); err != nil {
		t.Fatal(err)
	}
	sys := &bitlocker.System{WMI: r}
	vols, err := sys.Volumes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []bitlocker.Volume{
		{ID: `\\?\Volume{C:}\`, MountPoint: "C:", Type: bitlocker.OperatingSystem, ProtectionStatus: bitlocker.ProtectionOn,
			EncryptionStatus: bitlocker.FullyEncrypted, Protectors: []bitlocker.Protector{
				{KeyID: "8A696888-99A7-4FAC-92C7-6CC497EA7BDF", Type: bitlocker.RecoveryPassword},
				{KeyID: "3B3E091C-ECB9-4B46-9FDD-A9E699EC3C8C", Type: bitlocker.TPM}}},
		{ID: `\\?\Volume{E:}\`, MountPoint: "E:", Type: bitlocker.FixedData, ProtectionStatus: bitlocker.ProtectionOff,
			EncryptionStatus: bitlocker.FullyDecrypted},
	}
	if fmt.Sprint(vols) != fmt.Sprint(want) {
		t.Fatalf("volumes\n got %+v\nwant %+v", vols, want)
	}
	pw, err := sys.RecoveryPassword(context.Background(), "C:", "8A696888-99A7-4FAC-92C7-6CC497EA7BDF")
	if err != nil || pw != recordedPassword {
		t.Fatalf("RecoveryPassword: %v", err)
	}
	_, err = sys.RecoveryPassword(context.Background(), "C:", "3B3E091C-ECB9-4B46-9FDD-A9E699EC3C8C")
	if err == nil || strings.Contains(err.Error(), "254793") {
		t.Fatalf("a TPM protector's password: %v", err)
	}
}

const recordedPassword = "254793-568007-425557-712855-251119-474815-445082-696212"

// Every return value the agent acts on has a name and a reason, and errors.Is finds both the
// value and the agent's named error.
func TestReturnValues(t *testing.T) {
	tests := []struct {
		code  bitlocker.HRESULT
		text  string
		named error
	}{
		{bitlocker.FVE_E_KEY_REQUIRED, "0x8031001D FVE_E_KEY_REQUIRED", bitlocker.ErrLastProtector},
		{bitlocker.FVE_E_VOLUME_BOUND_ALREADY, "0x8031001F FVE_E_VOLUME_BOUND_ALREADY", nil},
		{bitlocker.FVE_E_INVALID_PASSWORD_FORMAT, "0x80310035 FVE_E_INVALID_PASSWORD_FORMAT", nil},
		{bitlocker.E_ACCESSDENIED, "0x80070005 E_ACCESSDENIED", bitlocker.ErrAccessDenied},
		{bitlocker.WBEM_E_ACCESS_DENIED, "0x80041003 WBEM_E_ACCESS_DENIED", bitlocker.ErrAccessDenied},
		{bitlocker.FVE_E_LOCKED_VOLUME, "0x80310000 FVE_E_LOCKED_VOLUME", bitlocker.ErrLocked},
		{bitlocker.FVE_E_PROTECTOR_NOT_FOUND, "0x80310033 FVE_E_PROTECTOR_NOT_FOUND", bitlocker.ErrNotFound},
		{bitlocker.E_INVALIDARG, "0x80070057 E_INVALIDARG", nil},
		{bitlocker.HRESULT(0x80311234), "0x80311234", nil},
	}
	for _, tt := range tests {
		err := bitlocker.ReturnValue("DeleteKeyProtector", uint32(tt.code))
		if !strings.HasPrefix(err.Error(), "DeleteKeyProtector: "+tt.text) || !errors.Is(err, tt.code) {
			t.Errorf("%08X: %v", uint32(tt.code), err)
		}
		if tt.named != nil && !errors.Is(err, tt.named) {
			t.Errorf("%v is not %v", err, tt.named)
		}
		for _, other := range []error{bitlocker.ErrLastProtector, bitlocker.ErrAccessDenied, bitlocker.ErrLocked, bitlocker.ErrNotFound} {
			if other != tt.named && errors.Is(err, other) {
				t.Errorf("%v is also %v", err, other)
			}
		}
	}
	if bitlocker.ReturnValue("Encrypt", 0) != nil {
		t.Fatal("ReturnValue 0 is an error")
	}
}

func TestEncryptArgs(t *testing.T) {
	for _, tt := range []struct {
		p             bitlocker.EncryptionPolicy
		method, flags uint32
	}{
		{bitlocker.EncryptionPolicy{}, 6, 0},
		{bitlocker.EncryptionPolicy{OSEncryptionType: 1}, 6, 0},
		{bitlocker.EncryptionPolicy{OSEncryptionType: 2}, 6, bitlocker.EncryptDataOnly},
		{bitlocker.EncryptionPolicy{EncryptionMethod: 7, OSEncryptionType: 0}, 7, 0},
		{bitlocker.EncryptionPolicy{EncryptionMethod: 99}, 6, 0},
	} {
		if m, f := bitlocker.EncryptArgs(tt.p); m != tt.method || f != tt.flags {
			t.Errorf("%+v: %d, %d; want %d, %d", tt.p, m, f, tt.method, tt.flags)
		}
	}
	for ed, home := range map[string]bool{"Core": true, "CoreSingleLanguage": true, "Professional": false, "Enterprise": false, "": false} {
		if bitlocker.IsHomeEdition(ed) != home {
			t.Errorf("IsHomeEdition(%q) = %v", ed, !home)
		}
	}
}
