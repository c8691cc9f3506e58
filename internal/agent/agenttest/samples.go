// Package agenttest holds what the agent's tests share: the real BitLocker samples kept beside
// the repository (recorded Windows outputs, volume images and their recovery passwords), and a
// real keyward server started as a process, with an HTTP proxy in front of it that can fail
// requests. Tests only; the agent itself never imports it.
//
// The samples are third-party test data and are read where they lie, never copied into the
// repository.
package agenttest

import (
	"github.com/keyward/keyward/internal/bitlockertest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// SamplesDir returns the directory of the BitLocker samples (see bitlockertest.Dir).
func SamplesDir(t testing.TB) string {
	t.Helper()
	return bitlockertest.Dir(t)
}

// Block is one fenced code block of windows-outputs.md.
type Block struct {
	Section string // the heading's number, e.g. "2a"
	Title   string // the heading's text after the number
	Index   int    // 0 for the section's first block, 1 for its second, ...
	Text    string // the block's lines with their common indentation removed
}

var heading = regexp.MustCompile(`^###\s+([0-9]+[a-z])\.\s*(.*)$`)

// WindowsOutputs returns every fenced block of windows-outputs.md, in file order, each with the
// section it belongs to.
func WindowsOutputs(t testing.TB) []Block {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(SamplesDir(t), "windows-outputs.md"))
	if err != nil {
		t.Fatal(err)
	}
	var out []Block
	var section, title string
	count := map[string]int{}
	var inBlock bool
	var lines []string
	for _, line := range strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n") {
		if inBlock {
			if strings.HasPrefix(strings.TrimSpace(line), "```") {
				out = append(out, Block{Section: section, Title: title, Index: count[section], Text: dedent(lines)})
				count[section]++
				inBlock, lines = false, nil
				continue
			}
			lines = append(lines, line)
			continue
		}
		if m := heading.FindStringSubmatch(line); m != nil {
			section, title = m[1], m[2]
			continue
		}
		if strings.HasPrefix(strings.TrimSpace(line), "```") && section != "" {
			inBlock = true
		}
	}
	if len(out) == 0 {
		t.Fatal("windows-outputs.md holds no fenced blocks")
	}
	return out
}

// Output returns the block of a section, failing the test if there is none.
func Output(t testing.TB, section string, index int) string {
	t.Helper()
	for _, b := range WindowsOutputs(t) {
		if b.Section == section && b.Index == index {
			return b.Text
		}
	}
	t.Fatalf("windows-outputs.md has no block %d in section %s", index, section)
	return ""
}

// dedent removes the indentation all non-blank lines share; some sources indented the whole
// block. Tabs and spaces count alike.
func dedent(lines []string) string {
	common := -1
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		n := len(l) - len(strings.TrimLeft(l, " \t"))
		if common < 0 || n < common {
			common = n
		}
	}
	for i, l := range lines {
		if len(l) >= common && common > 0 {
			lines[i] = l[common:]
		} else if strings.TrimSpace(l) == "" {
			lines[i] = ""
		}
	}
	return strings.Join(lines, "\n") + "\n"
}

// Image is one recovery-password protector of a real BitLocker volume image.
type Image struct {
	File     string // e.g. bitlk-aes-xts-128.img.xz
	Password string // canonical recovery password
	GUID     string // the protector GUID as the README lists it (lower case)
}

// Images returns every row of the README's image table: each image with each of its
// recovery-password protectors.
func Images(t testing.TB) []Image {
	t.Helper()
	var out []Image
	for _, s := range bitlockertest.Images(t) {
		out = append(out, Image{File: s.Image, Password: s.Password, GUID: strings.ToLower(s.KeyID)})
	}
	return out
}

// Passwords returns the distinct recovery passwords of the README's image table: valid, real
// passwords for tests that need some.
func Passwords(t testing.TB) []string {
	t.Helper()
	seen := map[string]bool{}
	var out []string
	for _, im := range Images(t) {
		if !seen[im.Password] {
			seen[im.Password] = true
			out = append(out, im.Password)
		}
	}
	return out
}
