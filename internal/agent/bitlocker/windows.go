//go:build windows

package bitlocker

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unicode/utf16"

	"golang.org/x/sys/windows"
)

// Windows is the BitLocker of the running Windows system. It runs Windows PowerShell 5.1, which
// every supported Windows has, with the BitLocker module's cmdlets and the
// Win32_EncryptableVolume WMI class, and reads their output with this package's parsers.
//
// How secrets travel between the agent and PowerShell, and why:
//   - The scripts are constants and reach PowerShell base64-encoded on its command line
//     (-EncodedCommand). They never contain a secret: command lines are recorded by process
//     auditing (event 4688), by endpoint security tools, and can be read by other users.
//   - Parameters that are not secret (mount point, key ID, a time) are passed as environment
//     variables of the child, so no value is ever spliced into script text (no injection).
//   - A recovery password going to PowerShell is written to its standard input, a pipe only the
//     two processes hold. An environment variable would be readable by every process of the
//     same account and inherited by anything PowerShell starts.
//   - Material coming back is written by the script to its standard output, another private
//     pipe, with [Console]::Out rather than through cmdlets.
//   - The material is handled with WMI method calls on Win32_EncryptableVolume objects, not
//     cmdlet parameters: PowerShell module logging (event 4103), when an administrator turns it
//     on, records the parameters of every cmdlet call, which would put the password in the
//     event log; method calls are not recorded. Script block logging (4104) records only the
//     constant script text.
type Windows struct {
	// PowerShell is the path of powershell.exe; empty for the one in System32, never one found
	// on PATH (a planted powershell.exe earlier on PATH would receive the passwords).
	PowerShell string
	// Timeout bounds one call; default two minutes.
	Timeout time.Duration
}

var _ BitLocker = (*Windows)(nil)

// exitNotFound is the exit code the scripts use for a volume or protector that does not exist.
const exitNotFound = 3

// prelude is put before every script: stop at the first error, write UTF-8 where there is a
// console to set (a service's child has none, and setting it would fail; the output the agent
// reads is ASCII then), and find a volume's Win32_EncryptableVolume object by drive letter or
// volume path.
const prelude = `$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
try { [Console]::OutputEncoding = New-Object System.Text.UTF8Encoding $false } catch { }
function Get-KwVolume([string]$MountPoint) {
  foreach ($w in Get-WmiObject -Namespace 'root\cimv2\Security\MicrosoftVolumeEncryption' -Class Win32_EncryptableVolume) {
    if ($w.DriveLetter -eq $MountPoint -or $w.DeviceID -eq $MountPoint) { return $w }
  }
  exit 3
}
function Assert-Kw($Result, [string]$What) {
  if ($Result.ReturnValue -ne 0) { throw ("{0} failed with 0x{1:X8}" -f $What, $Result.ReturnValue) }
}
`

// volumesScript lists the volumes with the unique ID and type Win32_EncryptableVolume gives
// (Get-BitLockerVolume has neither the ID nor removable drives), and protectors without their
// material.
const volumesScript = `$ids = @{}; $types = @{}
foreach ($w in Get-WmiObject -Namespace 'root\cimv2\Security\MicrosoftVolumeEncryption' -Class Win32_EncryptableVolume) {
  $key = if ($w.DriveLetter) { $w.DriveLetter } else { $w.DeviceID }
  $ids[$key] = $w.DeviceID
  $types[$key] = $w.VolumeType
}
# A volume Get-BitLockerVolume cannot read (an odd removable device) must not hide the others;
# an error with no volume at all is an error.
$vols = @(Get-BitLockerVolume -ErrorAction SilentlyContinue -ErrorVariable blErrors)
if ($vols.Count -eq 0 -and $blErrors.Count -gt 0) { throw $blErrors[0] }
$out = @(foreach ($v in $vols) {
  $kps = @(foreach ($kp in $v.KeyProtector) {
    [pscustomobject]@{ KeyProtectorId = [string]$kp.KeyProtectorId; KeyProtectorType = [string]$kp.KeyProtectorType }
  })
  $vt = $types[$v.MountPoint]
  if ($vt -eq $null) { $vt = [string]$v.VolumeType }
  [pscustomobject]@{
    VolumeId = $ids[$v.MountPoint]; MountPoint = $v.MountPoint; VolumeType = $vt
    VolumeStatus = [string]$v.VolumeStatus; ProtectionStatus = [string]$v.ProtectionStatus; LockStatus = [string]$v.LockStatus
    KeyProtector = $kps
  }
})
ConvertTo-Json -InputObject $out -Depth 4 -Compress
`

// readScript prints one protector's ID, type and material as Format-List lines.
const readScript = `$w = Get-KwVolume $env:KEYWARD_PS_MOUNT_POINT
$id = '{' + $env:KEYWARD_PS_KEY_ID + '}'
$t = $w.GetKeyProtectorType($id)
if ($t.ReturnValue -ne 0) { exit 3 }
[Console]::Out.WriteLine('KeyProtectorId : ' + $id)
[Console]::Out.WriteLine('KeyProtectorType : ' + $t.KeyProtectorType)
if ($t.KeyProtectorType -eq 3) {
  $r = $w.GetKeyProtectorNumericalPassword($id); Assert-Kw $r 'GetKeyProtectorNumericalPassword'
  [Console]::Out.WriteLine('RecoveryPassword : ' + $r.NumericalPassword)
} elseif ($t.KeyProtectorType -eq 2) {
  $r = $w.GetKeyProtectorExternalKey($id); Assert-Kw $r 'GetKeyProtectorExternalKey'
  [Console]::Out.WriteLine('ExternalKey : ' + ([BitConverter]::ToString([byte[]]$r.ExternalKey) -replace '-', ''))
}
`

// addScript adds a recovery-password protector with the password read from standard input.
const addScript = `$pw = [Console]::In.ReadLine()
$w = Get-KwVolume $env:KEYWARD_PS_MOUNT_POINT
$r = $w.ProtectKeyWithNumericalPassword('', $pw)
$pw = $null
Assert-Kw $r 'ProtectKeyWithNumericalPassword'
[Console]::Out.WriteLine($r.VolumeKeyProtectorID)
`

// removeScript deletes one protector; a protector that is not there is exit code 3.
const removeScript = `$w = Get-KwVolume $env:KEYWARD_PS_MOUNT_POINT
$id = '{' + $env:KEYWARD_PS_KEY_ID + '}'
if ($w.GetKeyProtectorType($id).ReturnValue -ne 0) { exit 3 }
Remove-BitLockerKeyProtector -MountPoint $env:KEYWARD_PS_MOUNT_POINT -KeyProtectorId $id | Out-Null
`

// enableScript starts encryption. The operating-system volume needs its TPM protector, or every
// start would ask for the recovery password; Enable-BitLocker adds it and starts encrypting, and
// skips the hardware test, which would hold encryption until a restart. A volume that already
// has its protectors is started through WMI's Encrypt. The encryption method is the one the
// group policy sets.
const enableScript = `$mp = $env:KEYWARD_PS_MOUNT_POINT
$v = Get-BitLockerVolume -MountPoint $mp
$tpm = $false
foreach ($kp in $v.KeyProtector) { if ([string]$kp.KeyProtectorType -like 'Tpm*') { $tpm = $true } }
if ([string]$v.VolumeType -eq 'OperatingSystem' -and -not $tpm) {
  Enable-BitLocker -MountPoint $mp -TpmProtector -SkipHardwareTest | Out-Null
} else {
  $w = Get-KwVolume $mp
  Assert-Kw ($w.Encrypt()) 'Encrypt'
}
`

// eventsScript prints the unlocks with recovery material since a time, with every data value
// of each event.
const eventsScript = `$since = [DateTime]::Parse($env:KEYWARD_PS_SINCE, [Globalization.CultureInfo]::InvariantCulture, [Globalization.DateTimeStyles]::RoundtripKind)
$events = @()
$events += @(Get-WinEvent -FilterHashtable @{ LogName = 'System'; ProviderName = 'Microsoft-Windows-BitLocker-Driver'; Id = 24652, 24654; StartTime = $since } -ErrorAction SilentlyContinue)
$events += @(Get-WinEvent -FilterHashtable @{ LogName = 'Microsoft-Windows-BitLocker/BitLocker Management'; Id = 782; StartTime = $since } -ErrorAction SilentlyContinue)
$out = @(foreach ($e in $events) { if ($e) {
  [pscustomobject]@{ Id = $e.Id; TimeCreated = $e.TimeCreated.ToUniversalTime().ToString('o'); Data = @(foreach ($p in $e.Properties) { [string]$p.Value }) }
} })
ConvertTo-Json -InputObject $out -Depth 3 -Compress
`

// manageBDEFallback reads a recovery password with manage-bde where the WMI call fails (a
// system whose WMI repository is damaged still has manage-bde). Its output is translated, which
// ParseManageBDEProtectors does not mind.
func (w *Windows) manageBDEFallback(ctx context.Context, mountPoint, keyID string) (string, error) {
	exe := filepath.Join(systemRoot(), "System32", "manage-bde.exe")
	ctx, cancel := context.WithTimeout(ctx, w.timeout())
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-protectors", "-get", mountPoint, "-id", "{"+keyID+"}")
	cmd.SysProcAttr = &syscall.SysProcAttr{HideWindow: true, CreationFlags: windows.CREATE_NO_WINDOW}
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("manage-bde -protectors -get: %v", err) // the output may hold the password
	}
	details, err := ParseManageBDEProtectors(string(out))
	clear(out)
	if err != nil {
		return "", err
	}
	for _, d := range details {
		if d.KeyID == keyID && d.RecoveryPassword != "" {
			return d.RecoveryPassword, nil
		}
	}
	return "", fmt.Errorf("manage-bde shows no recovery password for %s: %w", keyID, ErrNotFound)
}

func systemRoot() string {
	if r := os.Getenv("SystemRoot"); r != "" {
		return r
	}
	return `C:\Windows`
}

func (w *Windows) powershell() string {
	if w.PowerShell != "" {
		return w.PowerShell
	}
	return filepath.Join(systemRoot(), "System32", "WindowsPowerShell", "v1.0", "powershell.exe")
}

func (w *Windows) timeout() time.Duration {
	if w.Timeout > 0 {
		return w.Timeout
	}
	return 2 * time.Minute
}

// errScript is a failed script run; its message is PowerShell's error output, redacted.
type errScript struct {
	what string
	msg  string
}

func (e *errScript) Error() string { return e.what + ": " + e.msg }

// run runs a script with parameters in the environment and stdin on standard input, and
// returns its standard output. Exit code 3 is ErrNotFound.
func (w *Windows) run(ctx context.Context, what, script string, params map[string]string, stdin string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, w.timeout())
	defer cancel()
	cmd := exec.CommandContext(ctx, w.powershell(), "-NoLogo", "-NoProfile", "-NonInteractive",
		"-ExecutionPolicy", "Bypass", "-EncodedCommand", encodeCommand(prelude+script))
	cmd.Env = os.Environ()
	for k, v := range params {
		cmd.Env = append(cmd.Env, "KEYWARD_PS_"+k+"="+v)
	}
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{HideWindow: true, CreationFlags: windows.CREATE_NO_WINDOW}
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit) && exit.ExitCode() == exitNotFound:
		return nil, fmt.Errorf("%s: %w", what, ErrNotFound)
	case err != nil:
		clear(stdout.Bytes())
		msg := strings.TrimSpace(Redact(stderr.String()))
		if i := strings.IndexByte(msg, '\n'); i > 0 {
			msg = strings.TrimSpace(msg[:i]) // PowerShell's first line says what failed
		}
		if msg == "" {
			msg = err.Error()
		}
		return nil, &errScript{what: what, msg: msg}
	}
	return stdout.Bytes(), nil
}

// encodeCommand encodes a script for -EncodedCommand: base64 of UTF-16LE.
func encodeCommand(script string) string {
	u := utf16.Encode([]rune(script))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		b[2*i], b[2*i+1] = byte(c), byte(c>>8)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// Volumes implements BitLocker.
func (w *Windows) Volumes(ctx context.Context) ([]Volume, error) {
	out, err := w.run(ctx, "Get-BitLockerVolume", volumesScript, nil, "")
	if err != nil {
		return nil, err
	}
	return ParseVolumesJSON(out)
}

func (w *Windows) read(ctx context.Context, mountPoint, keyID string) (ProtectorDetail, error) {
	out, err := w.run(ctx, "reading protector "+keyID, readScript, map[string]string{"MOUNT_POINT": mountPoint, "KEY_ID": keyID}, "")
	if err != nil {
		return ProtectorDetail{}, err
	}
	details, err := ParseProtectorList(string(out))
	clear(out)
	if err != nil {
		return ProtectorDetail{}, err
	}
	if len(details) != 1 || details[0].KeyID != keyID {
		return ProtectorDetail{}, fmt.Errorf("reading protector %s: the output names another protector", keyID)
	}
	return details[0], nil
}

// RecoveryPassword implements BitLocker. It falls back to manage-bde when WMI fails.
func (w *Windows) RecoveryPassword(ctx context.Context, mountPoint, keyID string) (string, error) {
	d, err := w.read(ctx, mountPoint, keyID)
	if err != nil && !errors.Is(err, ErrNotFound) {
		if pw, ferr := w.manageBDEFallback(ctx, mountPoint, keyID); ferr == nil {
			return pw, nil
		}
	}
	if err != nil {
		return "", err
	}
	if d.Type != RecoveryPassword || d.RecoveryPassword == "" {
		return "", fmt.Errorf("protector %s is a %s, not a recovery password", keyID, d.Type)
	}
	return d.RecoveryPassword, nil
}

// ExternalKey implements BitLocker.
func (w *Windows) ExternalKey(ctx context.Context, mountPoint, keyID string) ([32]byte, error) {
	d, err := w.read(ctx, mountPoint, keyID)
	if err != nil {
		return [32]byte{}, err
	}
	if d.Type != ExternalKey {
		return [32]byte{}, fmt.Errorf("protector %s is a %s, not an external key", keyID, d.Type)
	}
	if !d.HasExternalKey {
		return [32]byte{}, fmt.Errorf("protector %s: %w", keyID, ErrNotReadable)
	}
	return d.ExternalKey, nil
}

// AddRecoveryPassword implements BitLocker.
func (w *Windows) AddRecoveryPassword(ctx context.Context, mountPoint, password string) (string, error) {
	out, err := w.run(ctx, "adding a recovery password", addScript, map[string]string{"MOUNT_POINT": mountPoint}, password+"\n")
	if err != nil {
		return "", err
	}
	id, err := CanonicalKeyID(string(out))
	if err != nil {
		return "", fmt.Errorf("adding a recovery password: WMI returned no protector ID: %w", err)
	}
	return id, nil
}

// RemoveProtector implements BitLocker.
func (w *Windows) RemoveProtector(ctx context.Context, mountPoint, keyID string) error {
	_, err := w.run(ctx, "Remove-BitLockerKeyProtector "+keyID, removeScript, map[string]string{"MOUNT_POINT": mountPoint, "KEY_ID": keyID}, "")
	return err
}

// EnableEncryption implements BitLocker.
func (w *Windows) EnableEncryption(ctx context.Context, mountPoint string) error {
	_, err := w.run(ctx, "Enable-BitLocker", enableScript, map[string]string{"MOUNT_POINT": mountPoint}, "")
	return err
}

// RecoveryUnlocks implements BitLocker. The time is passed in whole seconds, which .NET parses
// everywhere; the agent drops what it has already seen.
func (w *Windows) RecoveryUnlocks(ctx context.Context, since time.Time) ([]RecoveryUnlock, error) {
	out, err := w.run(ctx, "Get-WinEvent", eventsScript, map[string]string{"SINCE": since.UTC().Truncate(time.Second).Format(time.RFC3339)}, "")
	if err != nil {
		return nil, err
	}
	return ParseRecoveryEventsJSON(out)
}
