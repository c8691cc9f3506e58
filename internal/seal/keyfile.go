package seal

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	tinkpb "github.com/tink-crypto/tink-go/v2/proto/tink_go_proto"
)

// maxKeyFileSize bounds what Load reads. A keyset costs ~150 bytes per key,
// so this leaves room for thousands of rotations while refusing to slurp a
// wrongly configured path such as a database file.
const maxKeyFileSize = 1 << 20

// Generate returns the bytes of a new master key file: a cleartext Tink JSON
// keyset holding one AES256-GCM key. The caller owns the bytes and should
// clear them once written.
func Generate() ([]byte, error) {
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		return nil, fmt.Errorf("seal: generating master key: %w", err)
	}
	var buf bytes.Buffer
	if err := insecurecleartextkeyset.Write(h, keyset.NewJSONWriter(&buf)); err != nil {
		return nil, fmt.Errorf("seal: encoding master key: %w", err)
	}
	// A trailing newline keeps editors and `cat` tidy; the parser ignores it.
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// New returns a Sealer for a serialized master keyset (the bytes of a master
// key file). Error messages never contain key material.
func New(keysetJSON []byte) (*Sealer, error) {
	if len(bytes.TrimSpace(keysetJSON)) == 0 {
		return nil, errors.New("master key is empty")
	}
	r, err := parseMaster(keysetJSON)
	if err != nil {
		return nil, fmt.Errorf("master key is damaged or not a Keyward master key: %w", err)
	}
	s := &Sealer{}
	s.ring.Store(r)
	return s, nil
}

// parseMaster builds its own error reasons instead of passing on those from
// protojson or Tink: they can quote the offending input, and here the input
// is the master key.
func parseMaster(b []byte) (*keyring, error) {
	h, err := readHandle(b)
	if err != nil {
		return nil, err
	}
	m, err := aead.New(h)
	if err != nil {
		var types []string
		for _, k := range h.KeysetInfo().GetKeyInfo() {
			t := k.GetTypeUrl()
			if len(t) > 80 {
				t = t[:80] + "..."
			}
			types = append(types, fmt.Sprintf("%q", t))
		}
		return nil, fmt.Errorf("it is not an AEAD keyset (key types: %s)", strings.Join(types, ", "))
	}
	return newKeyring(h, m), nil
}

// readHandle parses the bytes of a master key file, with the errors of
// parseMaster.
func readHandle(b []byte) (*keyset.Handle, error) {
	h, err := insecurecleartextkeyset.Read(keyset.NewJSONReader(bytes.NewReader(b)))
	if err != nil {
		return nil, diagnose(b)
	}
	return h, nil
}

// diagnose explains why b did not load as a keyset, for an operator who has
// to decide whether the file is truncated, the wrong file, or hand-edited.
func diagnose(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return fmt.Errorf("it is not valid JSON (syntax error at byte %d of %d; truncated or not a key file?)", se.Offset, len(b))
		}
		return errors.New("it is not valid JSON")
	}
	ks, err := keyset.NewJSONReader(bytes.NewReader(b)).Read()
	if err != nil {
		return errors.New("it is JSON but not a Tink keyset")
	}
	if len(ks.GetKey()) == 0 {
		return errors.New("the keyset holds no keys")
	}
	primaryOK := false
	for _, k := range ks.GetKey() {
		if k.GetKeyId() == ks.GetPrimaryKeyId() && k.GetStatus() == tinkpb.KeyStatusType_ENABLED {
			primaryOK = true
		}
	}
	if !primaryOK {
		return fmt.Errorf("the keyset has no enabled primary key (primaryKeyId %d)", ks.GetPrimaryKeyId())
	}
	return errors.New("the keyset's key data is invalid")
}

// Load reads an existing master key file; it never creates one. A missing
// file gives an error matching fs.ErrNotExist.
//
// The Sealer remembers the path: it re-reads the file when it meets a value
// wrapped by a key it lacks, when the file is replaced, and on [Sealer.Reload].
func Load(path string) (*Sealer, error) {
	b, fi, err := readKeyFile(path)
	defer clear(b)
	if err != nil {
		return nil, err
	}
	r, err := parseMaster(b)
	if err != nil {
		return nil, damaged(path, err)
	}
	s := &Sealer{file: &keyFile{path: path, info: fi}}
	s.ring.Store(r)
	return s, nil
}

func damaged(path string, err error) error {
	return fmt.Errorf("master key file %s is damaged or not a Keyward master key: %w", path, err)
}

// readKeyFile returns the content of the master key file at path, after the
// checks every reader of it makes, and the file's information. The caller
// clears the bytes.
func readKeyFile(path string) ([]byte, fs.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("master key file %s: %w", path, fs.ErrNotExist)
		}
		return nil, nil, fmt.Errorf("cannot open master key file %s: %w", path, unwrapPathError(err))
	}
	defer f.Close()

	// Stat the open file, not the path, so the checks apply to the bytes
	// actually read even if the path is swapped underneath us.
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("cannot stat master key file %s: %w", path, unwrapPathError(err))
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("master key file %s is not a regular file", path)
	}
	if err := checkPerm(path, fi.Mode().Perm()); err != nil {
		return nil, nil, err
	}
	if fi.Size() > maxKeyFileSize {
		return nil, nil, fmt.Errorf("master key file %s is too large (%d bytes) to be a Keyward master key", path, fi.Size())
	}

	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		clear(b)
		return nil, nil, fmt.Errorf("cannot read master key file %s: %w", path, unwrapPathError(err))
	}
	if len(b) > maxKeyFileSize {
		clear(b)
		return nil, nil, fmt.Errorf("master key file %s is too large to be a Keyward master key", path)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, nil, fmt.Errorf("master key file %s is empty", path)
	}
	return b, fi, nil
}

// checkPerm refuses world access and group write but allows group read, so a
// key file can be shared with a service group: whoever can write the file can
// replace the master key. On Windows the mode bits do not reflect ACLs (files
// report 0666 or 0444), so the check would refuse every file there.
func checkPerm(path string, perm fs.FileMode) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	if perm&0o007 == 0 {
		if perm&0o020 != 0 {
			return fmt.Errorf("master key file %s is writable by its group (mode %04o); run chmod 600 on it", path, uint32(perm))
		}
		return nil
	}
	what := "accessible by"
	if perm&0o004 != 0 {
		what = "readable by"
	}
	return fmt.Errorf("master key file %s is %s other users (mode %04o); run chmod 600 on it", path, what, uint32(perm))
}

// unwrapPathError drops the *fs.PathError layer, whose text repeats the path
// already named in our message.
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// LoadOrCreate loads the master key file at path, creating it with mode 0600
// if it does not exist. The parent directory must exist. Several processes
// may race to create the same file: exactly one wins and reports created,
// the others load the winner's key.
func LoadOrCreate(path string) (s *Sealer, created bool, err error) {
	s, err = Load(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return s, false, err
	}
	created, err = create(path)
	if err != nil {
		return nil, false, err
	}
	// Load what is on disk rather than what we generated, so that a key file
	// that does not read back correctly fails now rather than after secrets
	// have been sealed with a key that only ever existed in memory.
	s, err = Load(path)
	if err != nil {
		return nil, false, err
	}
	return s, created, nil
}

// link is a variable so tests can simulate file systems without hard links.
var link = os.Link

// create writes a new key file at path unless one appears first; it reports
// whether this call wrote it.
//
// Writing straight into an O_EXCL-created path would let a racing process
// see the file before its content lands and fail with "empty" or "damaged".
// Instead the key is written and fsynced under a temporary name (created
// O_EXCL by os.CreateTemp) and then hard-linked to path: link(2) never
// replaces an existing file, so the path only ever appears complete and a
// loser of the race gets EEXIST and loads the winner's key.
func create(path string) (bool, error) {
	key, err := Generate()
	if err != nil {
		return false, err
	}
	defer clear(key)

	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return false, fmt.Errorf("cannot create master key file %s: %w", path, unwrapPathError(err))
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName)
	if err := writeKey(tmp, key); err != nil {
		return false, fmt.Errorf("cannot write master key file %s: %w", path, err)
	}

	err = link(tmpName, path)
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrExist):
		return false, nil
	default:
		// Some file systems (FAT, some network and FUSE mounts) have no
		// hard links. Fall back to writing the path directly; only there
		// can a racing reader see a half-written file.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("cannot create master key file %s: %w", path, unwrapPathError(err))
		}
		if err := writeKey(f, key); err != nil {
			os.Remove(path)
			return false, fmt.Errorf("cannot write master key file %s: %w", path, err)
		}
	}
	// Remove the temporary name before syncing the directory so that both
	// directory changes are durable together.
	os.Remove(tmpName)
	if err := syncDir(dir); err != nil {
		return true, fmt.Errorf("master key file %s was written but its directory could not be synced: %w", path, err)
	}
	return true, nil
}

// writeKey writes, fsyncs and closes f. Chmod makes the mode exactly 0600
// whatever the umask.
func writeKey(f *os.File, key []byte) error {
	err := f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(key)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return unwrapPathError(err)
}

// syncDir makes the new directory entry durable; without it a crash soon
// after start-up could lose the key file while the database keeps values
// sealed under it.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		// Directories cannot be opened for fsync on Windows; NTFS journals
		// the metadata change itself.
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return unwrapPathError(err)
	}
	defer d.Close()
	err = d.Sync()
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, errors.ErrUnsupported) {
		// Some file systems do not support fsync on directories.
		return nil
	}
	return unwrapPathError(err)
}
