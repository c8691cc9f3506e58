//go:build windows

package bitlocker

import "golang.org/x/sys/windows/registry"

// WindowsEncryptionPolicy reads the BitLocker Group Policy for the operating-system volume
// (HKLM\SOFTWARE\Policies\Microsoft\FVE): EncryptionMethodWithXtsOs and OSEncryptionType.
// Values not set are zero.
func WindowsEncryptionPolicy() EncryptionPolicy {
	var p EncryptionPolicy
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, `SOFTWARE\Policies\Microsoft\FVE`, registry.QUERY_VALUE)
	if err != nil {
		return p
	}
	defer k.Close()
	if v, _, err := k.GetIntegerValue("EncryptionMethodWithXtsOs"); err == nil {
		p.EncryptionMethod = uint32(v)
	}
	if v, _, err := k.GetIntegerValue("OSEncryptionType"); err == nil {
		p.OSEncryptionType = uint32(v)
	}
	return p
}
