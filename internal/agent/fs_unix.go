//go:build unix

package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// replaceFile renames from over to and flushes the directory, so that the rename survives a
// power cut.
func replaceFile(from, to string) error {
	if err := os.Rename(from, to); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(to))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// osDirOps prepares the state directory on Unix, where the agent runs only in tests and for
// enroll and status: private to the agent's user.
type osDirOps struct{}

func (osDirOps) Create(dir string) error { return os.Mkdir(dir, 0o700) }

func (osDirOps) Inspect(dir string) (dirInfo, error) {
	fi, err := os.Lstat(dir)
	if err != nil {
		return dirInfo{}, err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return dirInfo{Reparse: true}, nil
	}
	if !fi.IsDir() {
		return dirInfo{}, fmt.Errorf("%s is not a directory", dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return dirInfo{}, errors.New("no owner information")
	}
	uid := int(st.Uid)
	return dirInfo{Owner: "uid " + strconv.Itoa(uid), OwnerTrusted: uid == os.Geteuid() || uid == 0}, nil
}

func (osDirOps) Secure(dir string) error { return os.Chmod(dir, 0o700) }

// protectSecret and unprotectSecret keep secrets as they are on Unix: the state directory is
// private to the agent's user.
func protectSecret(s string) (string, error) { return s, nil }

func unprotectSecret(s string) (string, error) {
	if strings.HasPrefix(s, dpapiPrefix) {
		return "", errors.New("it is sealed with Windows DPAPI and can be read only on the machine that wrote it")
	}
	return s, nil
}

// lockDir takes an exclusive lock on the state directory, so that two agents (the service and
// one started by hand) never carry out the same rotation with different states. The lock is
// released with the returned file, or by the system when the process ends.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "agent.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("locking the state directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("locking the state directory: %w", err)
	}
	return f, nil
}

// systemProxy is the proxy from the environment (HTTPS_PROXY, NO_PROXY).
func systemProxy() func(*http.Request) (*url.URL, error) { return http.ProxyFromEnvironment }
