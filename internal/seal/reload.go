package seal

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// reloadInterval bounds how often a Sealer reads its key file on its own: a
// stream of values wrapped by unknown keys (damaged rows, or an attacker
// writing them) costs at most one read of the file per interval.
const reloadInterval = time.Second

// keyFile is the master key file a Sealer was loaded from.
//
// Several servers each hold their own copy of the file. A rotation adds the
// new key to every copy, so a server that meets a value wrapped by a key it
// has not loaded (re-wrapped by another server's rotation) re-reads its copy
// rather than answering that the value does not open; and a server whose copy
// is replaced starts sealing under the new primary without a restart.
type keyFile struct {
	path string
	log  atomic.Pointer[slog.Logger]
	// accept, when set, must pass on a re-read keyset before it replaces the
	// one in use (SetReloadCheck).
	accept atomic.Pointer[func(*Sealer) error]
	// checked is when Seal last looked at the file (Unix nanoseconds).
	checked atomic.Int64

	mu       sync.Mutex
	lastRead time.Time   // guarded by mu: when the file was last read
	info     fs.FileInfo // guarded by mu: the file as last read, to notice a replacement
}

// SetLogger sets where a Sealer loaded from a file reports re-reading it. The
// messages name the file and key IDs, never key material.
func (s *Sealer) SetLogger(l *slog.Logger) {
	if s != nil && s.file != nil {
		s.file.log.Store(l)
	}
}

// SetReloadCheck makes a Sealer loaded from a file take a re-read keyset only
// when check passes on it. The store checks that the new keys open the
// database's check value, so a key file of another installation copied over
// the right one is refused, and values go on being sealed under keys this
// installation can open.
func (s *Sealer) SetReloadCheck(check func(candidate *Sealer) error) {
	if s != nil && s.file != nil {
		s.file.accept.Store(&check)
	}
}

func (f *keyFile) logger() *slog.Logger {
	if l := f.log.Load(); l != nil {
		return l
	}
	return slog.New(slog.DiscardHandler)
}

// Reload re-reads the master key file now. If the file no longer holds a
// valid keyset the Sealer keeps the keys it has and Reload says why; values
// sealed meanwhile stay readable. A Sealer made by New has no file and
// Reload does nothing.
func (s *Sealer) Reload() error {
	if s == nil || s.file == nil {
		return nil
	}
	s.file.mu.Lock()
	defer s.file.mu.Unlock()
	return s.readLocked("reload requested")
}

// reloadFor re-reads the key file because a value is wrapped by key id, which
// the loaded keyset lacks, unless it was read less than reloadInterval ago.
// It reports whether the keyset now has the key.
func (s *Sealer) reloadFor(id uint32) bool {
	f := s.file
	if f == nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if s.keys().has(id) {
		return true // another goroutine read the new file meanwhile
	}
	if time.Since(f.lastRead) < reloadInterval {
		return false
	}
	if err := s.readLocked(fmt.Sprintf("a value is wrapped by master key ID %d, which is not loaded", id)); err != nil {
		return false
	}
	return s.keys().has(id)
}

// refreshIfReplaced re-reads the key file if it was replaced or changed since
// it was last read, looking at most once per reloadInterval.
func (s *Sealer) refreshIfReplaced() {
	f := s.file
	if f == nil {
		return
	}
	now := time.Now().UnixNano()
	last := f.checked.Load()
	if now-last < int64(reloadInterval) || !f.checked.CompareAndSwap(last, now) {
		return
	}
	fi, err := os.Stat(f.path)
	if err != nil {
		return // the read would fail as well; keep the keys in use
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.info != nil && os.SameFile(fi, f.info) && fi.ModTime().Equal(f.info.ModTime()) && fi.Size() == f.info.Size() {
		return
	}
	// Errors are logged by readLocked; sealing goes on under the loaded keys.
	_ = s.readLocked("the file changed")
}

// check runs the reload check, if any, on the keyset r.
func (f *keyFile) check(r *keyring) error {
	accept := f.accept.Load()
	if accept == nil {
		return nil
	}
	candidate := &Sealer{}
	candidate.ring.Store(r)
	return (*accept)(candidate)
}

// readLocked reads the key file and, if it holds a valid keyset, makes it the
// Sealer's. It holds f.mu.
func (s *Sealer) readLocked(why string) error {
	f := s.file
	f.lastRead = time.Now()
	log := f.logger()
	b, fi, err := readKeyFile(f.path)
	defer clear(b)
	if err == nil {
		var r *keyring
		if r, err = parseMaster(b); err != nil {
			err = damaged(f.path, err)
		} else if err = f.check(r); err != nil {
			if errors.Is(err, ErrWrongMasterKey) {
				// Settled until the file changes again: do not read it every second.
				f.info = fi
			}
			err = fmt.Errorf("master key file %s does not open this installation's data (is it another installation's key file?): %w", f.path, err)
		} else {
			old := s.keys()
			s.ring.Store(r)
			f.info = fi
			log.Info("master key file read again", slog.String("file", f.path), slog.String("why", why),
				slog.Uint64("primaryKeyId", uint64(r.primary)), slog.Int("keys", len(r.ids)),
				slog.Bool("primaryChanged", old == nil || old.primary != r.primary))
			return nil
		}
	}
	// Readers of the error learn only why the file does not load: the
	// messages of readKeyFile and parseMaster never quote the file.
	log.Error("master key file could not be read again; still using the keys loaded before",
		slog.String("file", f.path), slog.String("why", why), slog.String("error", err.Error()))
	return err
}
