//go:build !unix

package seal

import (
	"io/fs"
	"os"
)

// keepOwner does nothing where files have no Unix owner; the new file gets
// the directory's inherited ACL.
func keepOwner(*os.File, fs.FileInfo) {}
