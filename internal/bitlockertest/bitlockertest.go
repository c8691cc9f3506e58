// Package bitlockertest gives tests the real BitLocker samples kept beside the repository in
// ../shared/testdata/bitlocker: the recovery passwords and protector GUIDs of volume images made
// on Windows, and the recorded outputs of Windows BitLocker tools. Tests only.
package bitlockertest

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Sample is one recovery-password protector of a real BitLocker volume image.
type Sample struct {
	Image    string // the image file name, e.g. bitlk-aes-xts-128.img.xz
	Password string // canonical recovery password
	KeyID    string // the protector GUID as Windows shows it: upper case, no braces
}

// Dir returns the directory holding the samples, failing the test if it is missing: the
// samples are part of every checkout's surroundings, in CI too. It is KEYWARD_TESTDATA_DIR when
// set, else shared/testdata/bitlocker beside the repository (../shared from its root), else
// beside a parent of it (a clone in a temporary directory of a machine whose workspace keeps
// the samples at /work/shared).
func Dir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("KEYWARD_TESTDATA_DIR"); d != "" {
		return mustHaveReadme(t, d)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	var tried []string
	for dir := wd; ; dir = filepath.Dir(dir) {
		d := filepath.Join(dir, "..", "shared", "testdata", "bitlocker")
		if _, err := os.Stat(filepath.Join(d, "README.md")); err == nil {
			return d
		}
		tried = append(tried, d)
		if filepath.Dir(dir) == dir {
			break
		}
	}
	const workspace = "/work/shared/testdata/bitlocker"
	if _, err := os.Stat(filepath.Join(workspace, "README.md")); err == nil {
		return workspace
	}
	t.Fatalf("BitLocker samples not found (set KEYWARD_TESTDATA_DIR); looked in %v and %s", tried, workspace)
	return ""
}

func mustHaveReadme(t testing.TB, d string) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(d, "README.md")); err != nil {
		t.Fatalf("KEYWARD_TESTDATA_DIR=%s holds no README.md: %v", d, err)
	}
	return d
}

var row = regexp.MustCompile(`^\| (bitlk-[^ |]+) \| (\d{6}(?:-\d{6}){7}) \| ([0-9a-f-]{36}) \|`)

// Images returns every row of the image table in the samples' README: one per recovery-password
// protector of each image. Two images may share a protector (the same volume made twice).
func Images(t testing.TB) []Sample {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(Dir(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var out []Sample
	for _, line := range strings.Split(string(b), "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			out = append(out, Sample{Image: m[1], Password: m[2], KeyID: strings.ToUpper(m[3])})
		}
	}
	if len(out) < 21 {
		t.Fatalf("found %d image rows in the samples' README, want at least 21", len(out))
	}
	return out
}

// Samples returns every distinct recovery-password protector listed in the samples' README.
func Samples(t testing.TB) []Sample {
	t.Helper()
	var out []Sample
	seen := map[string]bool{}
	for _, s := range Images(t) {
		if !seen[s.KeyID+s.Password] {
			seen[s.KeyID+s.Password] = true
			out = append(out, s)
		}
	}
	return out
}
