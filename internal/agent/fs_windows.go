//go:build windows

package agent

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/windows"
)

// replaceFile renames from over to with MOVEFILE_WRITE_THROUGH: MoveFileEx returns only once
// the rename is on disk, which is what flushing the directory does elsewhere (Windows cannot
// flush a directory handle).
func replaceFile(from, to string) error {
	f, err := windows.UTF16PtrFromString(from)
	if err != nil {
		return err
	}
	t, err := windows.UTF16PtrFromString(to)
	if err != nil {
		return err
	}
	return windows.MoveFileEx(f, t, windows.MOVEFILE_REPLACE_EXISTING|windows.MOVEFILE_WRITE_THROUGH)
}

// stateDirSDDL owns the state directory to the Administrators group and gives SYSTEM (the
// service's account) and Administrators full control and nobody else anything, inherited by
// every file in the directory and protected from the parent's entries. The default
// %ProgramData% ACL lets every user read new subfolders, and the state file holds the device
// token: a local user who read it could report as this device.
const stateDirSDDL = "O:BAG:SYD:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)"

// MakeAdminOnlyDir creates dir with stateDirSDDL in CreateDirectory itself, or, when it exists,
// sets that owner and protected access list on it: SYSTEM and Administrators only. The
// install directory of the agent's binary (under Program Files) is made this way, so that no
// unelevated process can replace what the service runs as SYSTEM.
func MakeAdminOnlyDir(dir string) error {
	var ops osDirOps
	if err := ops.Create(dir); !errors.Is(err, fs.ErrExist) {
		return err
	}
	return ops.Secure(dir)
}

// osDirOps prepares the state directory on Windows.
type osDirOps struct{}

// Create makes the directory with stateDirSDDL as its security descriptor in CreateDirectory
// itself: there is no moment in which it exists with %ProgramData%'s inherited entries.
func (osDirOps) Create(dir string) error {
	sd, err := windows.SecurityDescriptorFromString(stateDirSDDL)
	if err != nil {
		return err
	}
	p, err := windows.UTF16PtrFromString(dir)
	if err != nil {
		return err
	}
	sa := windows.SecurityAttributes{Length: uint32(unsafe.Sizeof(windows.SecurityAttributes{})), SecurityDescriptor: sd}
	err = windows.CreateDirectory(p, &sa)
	if errors.Is(err, windows.ERROR_ALREADY_EXISTS) {
		return fs.ErrExist
	}
	return err
}

// Inspect reads the directory's attributes (of the link itself, for a reparse point) and owner.
func (osDirOps) Inspect(dir string) (dirInfo, error) {
	p, err := windows.UTF16PtrFromString(dir)
	if err != nil {
		return dirInfo{}, err
	}
	attrs, err := windows.GetFileAttributes(p)
	if err != nil {
		return dirInfo{}, err
	}
	if attrs&windows.FILE_ATTRIBUTE_REPARSE_POINT != 0 {
		return dirInfo{Reparse: true}, nil
	}
	if attrs&windows.FILE_ATTRIBUTE_DIRECTORY == 0 {
		return dirInfo{}, fmt.Errorf("%s is not a directory", dir)
	}
	sd, err := windows.GetNamedSecurityInfo(dir, windows.SE_FILE_OBJECT, windows.OWNER_SECURITY_INFORMATION)
	if err != nil {
		return dirInfo{}, err
	}
	owner, _, err := sd.Owner()
	if err != nil {
		return dirInfo{}, err
	}
	trusted := owner.IsWellKnown(windows.WinBuiltinAdministratorsSid) || owner.IsWellKnown(windows.WinLocalSystemSid)
	return dirInfo{Owner: owner.String(), OwnerTrusted: trusted}, nil
}

// Secure sets the owner and the protected access list of stateDirSDDL again.
func (osDirOps) Secure(dir string) error {
	sd, err := windows.SecurityDescriptorFromString(stateDirSDDL)
	if err != nil {
		return err
	}
	owner, _, err := sd.Owner()
	if err != nil {
		return err
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		return err
	}
	return windows.SetNamedSecurityInfo(dir, windows.SE_FILE_OBJECT,
		windows.OWNER_SECURITY_INFORMATION|windows.DACL_SECURITY_INFORMATION|windows.PROTECTED_DACL_SECURITY_INFORMATION, owner, nil, dacl, nil)
}

// protectSecret seals a secret of the state file with DPAPI in machine scope: the file copied
// off the machine (a backup, a disk image) is useless, and the state directory's access list
// keeps local users out.
func protectSecret(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	in := []byte(s)
	out, err := dpapi(in, true)
	if err != nil {
		return "", err
	}
	return dpapiPrefix + base64.StdEncoding.EncodeToString(out), nil
}

// unprotectSecret opens what protectSecret sealed; a value without the prefix (written by an
// older agent) is taken as it is and sealed at the next write.
func unprotectSecret(s string) (string, error) {
	rest, ok := strings.CutPrefix(s, dpapiPrefix)
	if !ok {
		return s, nil
	}
	in, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return "", errors.New("the sealed value is not base64")
	}
	out, err := dpapi(in, false)
	if err != nil {
		return "", fmt.Errorf("DPAPI cannot open it (was the state directory copied from another machine?): %w", err)
	}
	defer clear(out)
	return string(out), nil
}

// dpapi runs CryptProtectData or CryptUnprotectData in machine scope without any prompt.
func dpapi(in []byte, protect bool) ([]byte, error) {
	if len(in) == 0 {
		return nil, errors.New("nothing to seal")
	}
	blob := windows.DataBlob{Size: uint32(len(in)), Data: &in[0]}
	var out windows.DataBlob
	const flags = windows.CRYPTPROTECT_LOCAL_MACHINE | windows.CRYPTPROTECT_UI_FORBIDDEN
	var err error
	if protect {
		err = windows.CryptProtectData(&blob, nil, nil, 0, nil, flags, &out)
	} else {
		err = windows.CryptUnprotectData(&blob, nil, nil, 0, nil, flags, &out)
	}
	if err != nil {
		return nil, err
	}
	defer windows.LocalFree(windows.Handle(unsafe.Pointer(out.Data)))
	b := make([]byte, out.Size)
	copy(b, unsafe.Slice(out.Data, out.Size))
	clear(unsafe.Slice(out.Data, out.Size))
	return b, nil
}

// lockDir takes an exclusive lock on the state directory, so that two agents (the service and
// one started by hand) never carry out the same rotation with different states. The lock is
// released with the returned file, or by the system when the process ends.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "agent.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("locking the state directory: %w", err)
	}
	var ol windows.Overlapped
	err = windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ol)
	if err != nil {
		f.Close()
		if errors.Is(err, windows.ERROR_LOCK_VIOLATION) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("locking the state directory: %w", err)
	}
	return f, nil
}
