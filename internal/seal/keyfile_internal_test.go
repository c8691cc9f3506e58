package seal

import (
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
)

// setLink replaces the hard-link step for one test.
func setLink(t *testing.T, f func(oldname, newname string) error) {
	t.Helper()
	saved := link
	link = f
	t.Cleanup(func() { link = saved })
}

func TestCreateWithoutHardLinks(t *testing.T) {
	setLink(t, func(oldname, newname string) error {
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: syscall.EPERM}
	})
	dir := t.TempDir()
	path := filepath.Join(dir, "master.key")

	s1, created, err := LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("LoadOrCreate = created %v, err %v; want created", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %04o, want 0600", fi.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want only the key file", len(entries))
	}
	s2, created, err := LoadOrCreate(path)
	if err != nil || created {
		t.Fatalf("second LoadOrCreate = created %v, err %v; want loaded", created, err)
	}
	assertSameKey(t, s1, s2)
}

// TestCreateLosesRace makes another "process" publish its key between our
// Load and our link, and checks that we adopt its key instead of ours.
func TestCreateLosesRace(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "master.key")
	winner, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	setLink(t, func(oldname, newname string) error {
		if err := os.WriteFile(newname, winner, 0o600); err != nil {
			t.Fatal(err)
		}
		return os.Link(oldname, newname)
	})

	s, created, err := LoadOrCreate(path)
	if err != nil || created {
		t.Fatalf("LoadOrCreate = created %v, err %v; want loaded", created, err)
	}
	w, err := New(winner)
	if err != nil {
		t.Fatal(err)
	}
	assertSameKey(t, s, w)
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want only the key file", len(entries))
	}
}

func assertSameKey(t *testing.T, a, b *Sealer) {
	t.Helper()
	aad := AAD("key", "D", "K")
	sealed, err := a.Seal([]byte("secret"), aad)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := b.Open(sealed, aad); err != nil || string(pt) != "secret" {
		t.Fatalf("keys differ: Open = %q, %v", pt, err)
	}
}
