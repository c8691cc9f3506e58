package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/seal"
)

// A backup is a SQLite database file of Keyward's schema holding a copy of every table that
// CopyTo moves, taken from one snapshot. It is one self-contained file (no write-ahead log),
// portable between SQLite and PostgreSQL installations, and open to inspection with any
// SQLite tool. Key material in it is sealed exactly as in the live database: without the master
// key the backup discloses no recovery key.

// BackupSummary says what a backup holds.
type BackupSummary struct {
	SchemaVersion int64
	Devices       int64
	Keys          int64 // recovery keys, purged ones included
	Users         int64
	AuditEvents   int64
	LastSeq       int64 // the seq of the last audit event in the backup
}

func (s BackupSummary) String() string {
	return fmt.Sprintf("%d devices, %d keys, %d users, %d audit events (last seq %d)", s.Devices, s.Keys, s.Users, s.AuditEvents, s.LastSeq)
}

// Backup writes a consistent snapshot of the installation to a new file at path while servers
// go on writing: every row comes from one read transaction (a WAL snapshot on SQLite, a
// REPEATABLE READ READ ONLY transaction on PostgreSQL). The file is written under a temporary
// name beside path, synced, verified with sealer (the audit chain, the master key check value
// and every sealed secret), and only then given its name; an existing file is never replaced.
//
// Taking a backup is recorded in the audit trail as store.backup, after the snapshot and
// before the file appears under its name: a copy of every sealed secret leaving the database is
// an access worth answering for, and if the record cannot be written the backup is not kept.
func (db *DB) Backup(ctx context.Context, path string, sealer *seal.Sealer, o escrow.Origin) (BackupSummary, error) {
	if sealer == nil {
		return BackupSummary{}, errors.New("a backup is verified with the master key; none was given")
	}
	if _, err := os.Lstat(path); err == nil {
		return BackupSummary{}, errExists(path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return BackupSummary{}, fmt.Errorf("backup file %s: %w", path, errors.Unwrap(err))
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return BackupSummary{}, fmt.Errorf("cannot create a file beside %s: %w", path, errors.Unwrap(err))
	}
	tmpName := tmp.Name()
	defer func() {
		os.Remove(tmpName)
		os.Remove(tmpName + "-journal")
	}()
	if err := tmp.Close(); err != nil {
		return BackupSummary{}, err
	}
	if err := db.snapshotTo(ctx, tmpName); err != nil {
		return BackupSummary{}, err
	}
	b, err := OpenBackup(ctx, tmpName)
	if err != nil {
		return BackupSummary{}, fmt.Errorf("the snapshot just written does not open: %w", err)
	}
	sum, err := b.Verify(ctx, sealer)
	if cerr := b.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return sum, fmt.Errorf("the snapshot just written does not verify: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	e := o.Event(escrow.ActionStoreBackup, escrow.OutcomeSuccess)
	e.Detail = abs + ": " + sum.String()
	if err := db.Record(ctx, e); err != nil {
		return sum, fmt.Errorf("the backup could not be recorded in the audit trail, so it was not kept: %w", err)
	}
	return sum, placeNew(tmpName, path)
}

// snapshotTo copies the installation into the empty SQLite file at path and syncs it.
func (db *DB) snapshotTo(ctx context.Context, path string) error {
	dst, err := openSQLiteFile(ctx, path, "DELETE", Options{})
	if err != nil {
		return err
	}
	_, err = db.CopyTo(ctx, dst)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// BackupFile is a backup opened for verification and restore. It never changes the file.
type BackupFile struct {
	path     string
	db       *DB
	cleanup  func()
	verified *BackupSummary
}

// OpenBackup opens the backup file at path read-only. It refuses a file that SQLite finds
// damaged, one that is not a Keyward database, and one made by a newer Keyward than this one.
// A backup of an older schema is brought up to date in a private copy; the file stays as it is.
func OpenBackup(ctx context.Context, path string) (*BackupFile, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("backup file %s does not exist", path)
		}
		return nil, fmt.Errorf("backup file %s: %w", path, errors.Unwrap(err))
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("backup file %s is not a regular file", path)
	}
	q := url.Values{}
	q.Set("mode", "ro")
	q.Add("_pragma", "query_only(1)")
	pool, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	version, err := backupSchema(ctx, pool, fi.Size())
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("backup file %s %w", path, err)
	}
	list, err := migrationList("sqlite")
	if err != nil {
		pool.Close()
		return nil, err
	}
	latest := list[len(list)-1].version
	if version > latest {
		pool.Close()
		return nil, fmt.Errorf("backup file %s was made by a newer Keyward (schema version %d; this one knows up to %d): restore it with that version of Keyward or a later one", path, version, latest)
	}
	now := func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }
	if version == latest {
		return &BackupFile{path: path, db: &DB{rw: pool, ro: pool, dialect: "sqlite", Now: now, Rand: cryptoRand}}, nil
	}
	pool.Close()
	dir, err := os.MkdirTemp("", "keyward-backup-")
	if err != nil {
		return nil, err
	}
	migrated := filepath.Join(dir, "backup.db")
	if err := copyFile(path, migrated); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("backup file %s: %w", path, err)
	}
	db, err := openSQLiteFile(ctx, migrated, "DELETE", Options{})
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("backup file %s (schema version %d) cannot be brought up to date: %w", path, version, err)
	}
	return &BackupFile{path: path, db: db, cleanup: func() { os.RemoveAll(dir) }}, nil
}

// backupSchema checks the file's structure and returns its schema version. Its errors complete
// the sentence "backup file F ...".
func backupSchema(ctx context.Context, pool *sql.DB, size int64) (int64, error) {
	// integrity_check reads every page: a damaged page or index fails here, before anything is
	// copied.
	var check string
	if err := pool.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&check); err != nil {
		return 0, fmt.Errorf("is damaged or not a Keyward backup: %w", err)
	}
	if check != "ok" {
		return 0, fmt.Errorf("is damaged: %s", check)
	}
	// SQLite reads missing bytes at the end as zeros, so a file cut short in a page's unused
	// space passes integrity_check: its header still says how long it must be.
	var pages, pageSize int64
	if err := pool.QueryRowContext(ctx, `PRAGMA page_count`).Scan(&pages); err != nil {
		return 0, fmt.Errorf("is damaged or not a Keyward backup: %w", err)
	}
	if err := pool.QueryRowContext(ctx, `PRAGMA page_size`).Scan(&pageSize); err != nil {
		return 0, fmt.Errorf("is damaged or not a Keyward backup: %w", err)
	}
	if size != pages*pageSize {
		return 0, fmt.Errorf("is damaged: it is %d bytes long, its header says %d (truncated or extended)", size, pages*pageSize)
	}
	var version int64
	if err := pool.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&version); err != nil || version == 0 {
		return 0, errors.New("is not a Keyward backup: it has no Keyward schema")
	}
	return version, nil
}

// Close closes the backup.
func (b *BackupFile) Close() error {
	err := b.db.Close()
	if b.cleanup != nil {
		b.cleanup()
	}
	return err
}

// Verify checks the backup with sealer: the master key check value opens (the backup was made
// under this master key), every sealed secret opens under its own row's binding, and the audit
// chain verifies to the length its head records.
func (b *BackupFile) Verify(ctx context.Context, sealer *seal.Sealer) (BackupSummary, error) {
	var sum BackupSummary
	err := b.db.read(ctx, func(tx *sql.Tx) error {
		var c seal.Sealed
		err := tx.QueryRowContext(ctx, `SELECT ciphertext, wrapped_key FROM seal_check WHERE id = 1`).Scan(&c.Ciphertext, &c.WrappedKey)
		if errors.Is(err, sql.ErrNoRows) {
			return escrow.Errorf(escrow.CodeInvalid, "the backup holds no master key check value")
		}
		if err != nil {
			return err
		}
		if err := sealer.VerifyCheck(c); err != nil {
			return escrow.Errorf(escrow.CodeInvalid, "the master key does not open the backup's check value: the backup was made under another master key")
		}
		if err := verifySealed(ctx, tx, sealer); err != nil {
			return err
		}
		for _, n := range []struct {
			dst   *int64
			query string
		}{
			{&sum.SchemaVersion, `SELECT MAX(version) FROM schema_migrations`},
			{&sum.Devices, `SELECT COUNT(*) FROM devices`},
			{&sum.Keys, `SELECT COUNT(*) FROM recovery_keys`},
			{&sum.Users, `SELECT COUNT(*) FROM users`},
			{&sum.LastSeq, `SELECT seq FROM audit_head WHERE id = 1`},
		} {
			if err := tx.QueryRowContext(ctx, n.query).Scan(n.dst); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return sum, b.readError(err)
	}
	sum.AuditEvents, err = b.db.verifyAudit(ctx, sealer)
	if broken, ok := errors.AsType[*audit.BrokenError](err); ok {
		return sum, fmt.Errorf("the backup's audit chain does not verify: %w", broken)
	}
	if err != nil {
		return sum, b.readError(err)
	}
	b.verified = &sum
	return sum, nil
}

// readError keeps the message of a verification failure and says plainly when the file itself
// could not be read.
func (b *BackupFile) readError(err error) error {
	if e, ok := errors.AsType[*escrow.Error](err); ok && e.Code == escrow.CodeUnavailable && e.Err != nil {
		return fmt.Errorf("backup file %s could not be read: %w", b.path, e.Err)
	}
	return err
}

// verifySealed opens every sealed secret, each under the additional data of its own row, so a
// damaged or moved ciphertext is found before a restore rather than at a disclosure.
func verifySealed(ctx context.Context, tx *sql.Tx, sealer *seal.Sealer) error {
	open := func(query, what string, aad func(a, b string) []byte) error {
		rows, err := tx.QueryContext(ctx, query)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var a, b string
			var s seal.Sealed
			if err := rows.Scan(&a, &b, &s.Ciphertext, &s.WrappedKey); err != nil {
				return err
			}
			pt, err := sealer.Open(s, aad(a, b))
			clear(pt)
			if err != nil {
				return escrow.Errorf(escrow.CodeInvalid, "the sealed %s of device %s does not open: the backup is damaged", what+b, a)
			}
		}
		return rows.Err()
	}
	if err := open(`SELECT device_id, key_id, ciphertext, wrapped_key FROM recovery_keys WHERE ciphertext IS NOT NULL`,
		"material of key ", keyAAD); err != nil {
		return err
	}
	return open(`SELECT id, '', verification_key, verification_key_wrap FROM devices`, "verification key",
		func(deviceID, _ string) []byte { return verificationAAD(deviceID) })
}

// RestoreTo copies the verified backup into dst, which must hold no users, devices or audit
// events, in one transaction: a failed restore leaves dst as it was. The restored audit chain
// goes on with a store.restore event, so the installation's log says where it came from.
func (b *BackupFile) RestoreTo(ctx context.Context, dst *DB, o escrow.Origin) (BackupSummary, error) {
	if b.verified == nil {
		return BackupSummary{}, errors.New("verify a backup before restoring it")
	}
	sum := *b.verified
	abs, err := filepath.Abs(b.path)
	if err != nil {
		abs = b.path
	}
	e := o.Event(escrow.ActionStoreRestore, escrow.OutcomeSuccess)
	e.Detail = "from " + abs + ": " + sum.String()
	stats, err := b.db.copyTo(ctx, dst, func(tx *sql.Tx) error { return dst.appendEvent(ctx, tx, e) })
	if err != nil {
		return sum, err
	}
	n, err := dst.VerifyAudit(ctx)
	if err != nil {
		return sum, fmt.Errorf("the restored audit chain does not verify: %w", err)
	}
	if n != stats["audit_events"]+1 {
		return sum, fmt.Errorf("%d audit events restored but %d verified", stats["audit_events"], n-1)
	}
	return sum, nil
}

func errExists(path string) error {
	return escrow.Errorf(escrow.CodeConflict, "%s already exists; a backup never replaces a file: choose a new name", path)
}

// placeNew gives the complete file tmp the name path, never replacing a file already there:
// link(2) fails if path exists, where rename(2) would overwrite it.
func placeNew(tmp, path string) error {
	err := os.Link(tmp, path)
	if errors.Is(err, fs.ErrExist) {
		return errExists(path)
	}
	if err != nil {
		// No hard links on this file system (FAT, some network mounts): claim the name with an
		// exclusive create, then move the backup onto the claimed name.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return errExists(path)
		}
		if err != nil {
			return fmt.Errorf("cannot create %s: %w", path, errors.Unwrap(err))
		}
		f.Close()
		if err := os.Rename(tmp, path); err != nil {
			os.Remove(path)
			return fmt.Errorf("cannot create %s: %w", path, errors.Unwrap(err))
		}
	}
	return syncDir(filepath.Dir(path))
}

// syncDir makes a new directory entry durable.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil // directories cannot be synced there; NTFS journals the change
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, errors.ErrUnsupported) {
		return err
	}
	return nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}
