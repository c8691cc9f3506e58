//go:build unix

package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/testkit"
)

// withUmask runs the test under umask, the common 022 of a shell, whatever the test runner's.
func withUmask(t *testing.T, umask int) {
	old := syscall.Umask(umask)
	t.Cleanup(func() { syscall.Umask(old) })
}

func assertOwnerOnly(t *testing.T, dir string) {
	t.Helper()
	path := filepath.Join(dir, store.DatabaseFile)
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %04o, want 0600", filepath.Base(p), uint32(fi.Mode().Perm()))
		}
	}
}

func TestDatabaseFilesOwnerOnly(t *testing.T) {
	withUmask(t, 0o022)
	// An existing data directory, as an operator or a package makes it.
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	r := start(t, dir, nil)
	setUp(t, r.URL(), dir)
	assertOwnerOnly(t, dir)
	r.stop()

	// Files an earlier version left readable by everyone are narrowed at the next start. (SQLite
	// removes -wal and -shm at a clean close; empty ones are what a crash can leave.)
	path := filepath.Join(dir, store.DatabaseFile)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path + "-wal", path + "-shm"} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r = start(t, dir, nil)
	mustCall(t, 200, "GET", r.URL()+"/readyz", "", "")
	assertOwnerOnly(t, dir)
}

func TestRefusesWhatOthersCanWrite(t *testing.T) {
	t.Run("data directory writable by its group", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "data")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o770); err != nil {
			t.Fatal(err)
		}
		s := NewServer()
		s.DataDir, s.Listen = dir, "127.0.0.1:0"
		err := s.Open(context.Background(), io.Discard)
		if err == nil || !strings.Contains(err.Error(), "writable by other users (mode 0770)") {
			s.Close()
			t.Fatalf("start on a group-writable data directory: %v", err)
		}
		if left, _ := os.ReadDir(dir); len(left) != 0 {
			t.Errorf("the refused start left %d files", len(left))
		}
		if code, _, stderr := cli(t, dir, "", "users", "list"); code == 0 || !strings.Contains(stderr, "writable by other users") {
			t.Errorf("users list on a group-writable data directory: %d %s", code, stderr)
		}
	})
	t.Run("key file writable by its group", func(t *testing.T) {
		dir := t.TempDir()
		start(t, dir, nil).stop()
		if err := os.Chmod(filepath.Join(dir, "master.key"), 0o660); err != nil {
			t.Fatal(err)
		}
		s := NewServer()
		s.DataDir, s.Listen = dir, "127.0.0.1:0"
		err := s.Open(context.Background(), io.Discard)
		if err == nil || !strings.Contains(err.Error(), "writable by its group") {
			s.Close()
			t.Fatalf("start with a group-writable key file: %v", err)
		}
	})
}

func TestMissingMasterKeyBesideDatabase(t *testing.T) {
	dir := t.TempDir()
	start(t, dir, nil).stop()
	keyFile := filepath.Join(dir, "master.key")
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadDir(dir)
	logs := &testkit.Buffer{}
	s := NewServer()
	s.DataDir, s.Listen = dir, "127.0.0.1:0"
	err := s.Open(context.Background(), logs)
	if err == nil || !strings.Contains(err.Error(), "master key file "+keyFile+" is missing") {
		s.Close()
		t.Fatalf("start without the master key file: %v", err)
	}
	if _, err := os.Stat(keyFile); !os.IsNotExist(err) {
		t.Errorf("a master key file was created: %v", err)
	}
	if after, _ := os.ReadDir(dir); len(after) != len(before) {
		t.Errorf("files before %v, after %v", before, after)
	}
	if strings.Contains(logs.String(), "created a new master key") {
		t.Errorf("the log says a key was created: %s", logs.String())
	}
}

func TestMissingMasterKeyBesidePostgres(t *testing.T) {
	dbURL := pgDatabase(t)
	keyFile := filepath.Join(t.TempDir(), "master.key")
	start(t, t.TempDir(), map[string]string{"KEYWARD_DATABASE_URL": dbURL, "KEYWARD_MASTER_KEY_FILE": keyFile}).stop()
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	s := NewServer()
	s.DataDir, s.DatabaseURL, s.MasterKeyFile, s.Listen = t.TempDir(), dbURL, keyFile, "127.0.0.1:0"
	err := s.Open(context.Background(), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "is missing") {
		s.Close()
		t.Fatalf("start on PostgreSQL without the master key file: %v", err)
	}
	if _, err := os.Stat(keyFile); !os.IsNotExist(err) {
		t.Errorf("a master key file was created: %v", err)
	}
}
