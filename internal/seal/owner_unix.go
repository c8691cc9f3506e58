//go:build unix

package seal

import (
	"io/fs"
	"os"
	"syscall"
)

// keepOwner gives f the owner and group of old, where the process may (as
// root); elsewhere the new file belongs to whoever runs the command.
func keepOwner(f *os.File, old fs.FileInfo) {
	st, ok := old.Sys().(*syscall.Stat_t)
	if !ok || (int(st.Uid) == os.Geteuid() && int(st.Gid) == os.Getegid()) {
		return
	}
	// Failure leaves the file to the caller, as if it had been created anew.
	_ = f.Chown(int(st.Uid), int(st.Gid))
}
