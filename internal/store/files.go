package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// CheckDataDir refuses a data directory that users other than its owner can write: they could
// replace the database, or the master key file kept beside it, with their own. On Windows mode
// bits do not reflect ACLs, so there is nothing to check.
func CheckDataDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data directory %s: %w", dir, errors.Unwrap(err))
	}
	if !fi.IsDir() {
		return fmt.Errorf("data directory %s is not a directory", dir)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("data directory %s is writable by other users (mode %04o); run chmod 700 on it", dir, uint32(perm))
	}
	return nil
}

// sqliteFiles are the database file and the two SQLite keeps beside it in WAL mode.
func sqliteFiles(path string) []string { return []string{path, path + "-wal", path + "-shm"} }

// restrictSQLiteFiles creates the database file if it is missing, with mode 0600 whatever the
// umask, and makes the existing ones 0600: they hold sealed key material, password and token
// hashes and the audit trail. SQLite creates -wal and -shm with the mode of the database file,
// so they follow; files left 0644 by an earlier version are narrowed too.
func restrictSQLiteFiles(path string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("database file %s: %w", path, errors.Unwrap(err))
	}
	if err := f.Close(); err != nil {
		return err
	}
	for _, p := range sqliteFiles(path) {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("cannot restrict %s to its owner: %w", p, errors.Unwrap(err))
		}
	}
	return nil
}

// Initialized reports whether the store at url (PostgreSQL) or in dataDir (SQLite) has been
// set up by a start with a master key (it holds a check value), without creating or changing
// anything: serve asks before it would create a new master key.
func Initialized(ctx context.Context, url, dataDir string) (bool, error) {
	if url == "" {
		fi, err := os.Stat(filepath.Join(dataDir, DatabaseFile))
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		return fi.Size() > 0, nil
	}
	pool, err := sql.Open("pgx", url)
	if err != nil {
		return false, fmt.Errorf("open PostgreSQL: %w", err)
	}
	defer pool.Close()
	var exists bool
	if err := pool.QueryRowContext(ctx, `SELECT to_regclass('seal_check') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return false, err
	}
	var n int64
	err = pool.QueryRowContext(ctx, `SELECT COUNT(*) FROM seal_check`).Scan(&n)
	return n > 0, err
}
