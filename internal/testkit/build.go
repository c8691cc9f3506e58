package testkit

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var builds struct {
	mu  sync.Mutex
	dir string
	bin map[string]string // package path → built binary
}

// Binary builds the command at pkgPath (e.g. github.com/keyward/keyward/cmd/keyward) once per
// test process and returns the binary's path, for tests that run a program as a real process.
// The go command caches the build, so later test processes pay little for it. A package that
// calls Binary removes the binaries by running its tests through Main.
func Binary(t testing.TB, pkgPath string) string {
	t.Helper()
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if bin, ok := builds.bin[pkgPath]; ok {
		return bin
	}
	if builds.dir == "" {
		dir, err := os.MkdirTemp("", "keyward-test-bin-")
		if err != nil {
			t.Fatal(err)
		}
		builds.dir, builds.bin = dir, map[string]string{}
	}
	bin := filepath.Join(builds.dir, filepath.Base(pkgPath))
	if out, err := exec.Command("go", "build", "-o", bin, pkgPath).CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", pkgPath, err, out)
	}
	builds.bin[pkgPath] = bin
	return bin
}

// Main runs a package's tests and then removes the binaries Binary built. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
	}
	os.Exit(code)
}
