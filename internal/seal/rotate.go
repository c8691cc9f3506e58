package seal

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
)

// AddKey adds a new AES256-GCM key to the master key file at path and makes
// it the primary; the keys already there stay, so everything they wrap still
// opens. It returns the new key's ID.
//
// The file is replaced atomically: a reader (a running server re-reading it)
// sees the old keyset or the new one, never a mixture, and a crash leaves one
// of the two on disk. Two commands changing the same file at once can lose
// one change; run one at a time.
func AddKey(path string) (uint32, error) {
	var id uint32
	err := editKeyFile(path, func(m *keyset.Manager) error {
		var err error
		if id, err = m.Add(aead.AES256GCMKeyTemplate()); err != nil {
			return fmt.Errorf("generating a master key: %w", err)
		}
		return m.SetPrimary(id)
	})
	return id, err
}

// RemoveKeys deletes the keys with the given IDs from the master key file at
// path; IDs the file no longer has are ignored. It refuses to remove the
// primary key. Whatever a removed key wraps no longer opens with this file:
// the caller must have made sure nothing does, and backups of the database
// taken before the rotation still need a copy of the old file.
func RemoveKeys(path string, ids []uint32) error {
	return editKeyFile(path, func(m *keyset.Manager) error {
		h, err := m.Handle()
		if err != nil {
			return err
		}
		info := h.KeysetInfo()
		for _, id := range ids {
			if id == info.GetPrimaryKeyId() {
				return fmt.Errorf("master key ID %d is the primary key and cannot be removed", id)
			}
		}
		for _, k := range info.GetKeyInfo() {
			if slices.Contains(ids, k.GetKeyId()) {
				if err := m.Delete(k.GetKeyId()); err != nil {
					return fmt.Errorf("removing master key ID %d: %w", k.GetKeyId(), err)
				}
			}
		}
		return nil
	})
}

// editKeyFile reads the key file at path, lets change edit its keyset, checks
// the result is a usable master keyset and writes it back atomically.
func editKeyFile(path string, change func(*keyset.Manager) error) error {
	b, fi, err := readKeyFile(path)
	defer clear(b)
	if err != nil {
		return err
	}
	if _, err := parseMaster(b); err != nil {
		return damaged(path, err)
	}
	h, err := readHandle(b)
	if err != nil {
		return damaged(path, err)
	}
	m := keyset.NewManagerFromHandle(h)
	if err := change(m); err != nil {
		return fmt.Errorf("master key file %s: %w", path, err)
	}
	if h, err = m.Handle(); err != nil {
		return fmt.Errorf("master key file %s: %w", path, err)
	}
	var buf bytes.Buffer
	defer func() { clear(buf.Bytes()) }()
	if err := insecurecleartextkeyset.Write(h, keyset.NewJSONWriter(&buf)); err != nil {
		return fmt.Errorf("master key file %s: encoding the keyset: %w", path, err)
	}
	buf.WriteByte('\n')
	if _, err := parseMaster(buf.Bytes()); err != nil {
		return fmt.Errorf("master key file %s: the changed keyset does not load: %w", path, err)
	}
	return replaceFile(path, buf.Bytes(), fi)
}

// replaceFile writes content to a new file beside path (mode 0600, or the
// old file's mode, which Load has checked is closed to others), syncs it,
// renames it over path and syncs the directory, so that path always holds a
// whole key file and the change survives a crash. The owner of the old file
// is kept where the process may set it (root), so a server running under its
// own account can still read a file replaced by an administrator.
func replaceFile(path string, content []byte, old fs.FileInfo) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("cannot write master key file %s: %w", path, unwrapPathError(err))
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName)
	keepOwner(tmp, old)
	if err := writeKey(tmp, content); err != nil {
		return fmt.Errorf("cannot write master key file %s: %w", path, err)
	}
	if perm := old.Mode().Perm(); perm != 0o600 && checkPerm(path, perm) == nil {
		if err := os.Chmod(tmpName, perm); err != nil {
			return fmt.Errorf("cannot write master key file %s: %w", path, unwrapPathError(err))
		}
	}
	if err := os.Rename(tmpName, path); err != nil {
		var le *os.LinkError
		if errors.As(err, &le) {
			err = le.Err
		}
		return fmt.Errorf("cannot replace master key file %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("master key file %s was replaced but its directory could not be synced: %w", path, err)
	}
	return nil
}
