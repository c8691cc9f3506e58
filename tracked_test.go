package keyward_test

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestNoLargeOrBinaryFilesTracked keeps build outputs out of the repository: a 33 MB binary
// once slipped in beside the source. Every tracked file must be under 1 MB and none may be an
// executable (ELF, PE or Mach-O).
func TestNoLargeOrBinaryFilesTracked(t *testing.T) {
	out, err := exec.Command("git", "ls-files", "-z").Output()
	if err != nil {
		t.Skipf("not a git work tree (%v): nothing to check", err)
	}
	files := strings.Split(strings.TrimRight(string(out), "\x00"), "\x00")
	if len(files) < 10 {
		t.Fatalf("git ls-files listed %d files: the check would check nothing", len(files))
	}
	for _, name := range files {
		if problem := trackedFileProblem(name); problem != "" {
			t.Errorf("%s: %s", name, problem)
		}
	}
}

func trackedFileProblem(name string) string {
	info, err := os.Lstat(name)
	if err != nil {
		return "" // deleted in the work tree: not ours to judge
	}
	if info.Size() > 1<<20 {
		return "over 1 MB: build outputs and data sets do not belong in the repository"
	}
	f, err := os.Open(name)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	head := make([]byte, 4)
	n, _ := f.Read(head)
	if isExecutable(head[:n]) {
		return "an executable binary: build outputs do not belong in the repository"
	}
	return ""
}

// isExecutable reports whether the bytes start like an ELF, PE or Mach-O file.
func isExecutable(head []byte) bool {
	for _, magic := range [][]byte{
		{0x7f, 'E', 'L', 'F'},
		{'M', 'Z'},
		{0xfe, 0xed, 0xfa, 0xce}, {0xfe, 0xed, 0xfa, 0xcf},
		{0xce, 0xfa, 0xed, 0xfe}, {0xcf, 0xfa, 0xed, 0xfe},
	} {
		if bytes.HasPrefix(head, magic) {
			return true
		}
	}
	return false
}

func TestIsExecutable(t *testing.T) {
	for _, tc := range []struct {
		name string
		head []byte
		want bool
	}{
		{"elf", []byte{0x7f, 'E', 'L', 'F'}, true},
		{"pe", []byte("MZ\x90\x00"), true},
		{"mach-o 64", []byte{0xcf, 0xfa, 0xed, 0xfe}, true},
		{"go source", []byte("pack"), false},
		{"shell script", []byte("#!/u"), false},
		{"empty", nil, false},
	} {
		if got := isExecutable(tc.head); got != tc.want {
			t.Errorf("%s: isExecutable = %v, want %v", tc.name, got, tc.want)
		}
	}
}
