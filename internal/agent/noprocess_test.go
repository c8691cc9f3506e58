package agent_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The agent starts no process on Windows: BitLocker goes through WMI over COM and events
// through the Event Log API, so no recovery password can reach a command line (process auditing,
// endpoint tools) or PowerShell's module logging and transcription. This test holds every
// non-test source of the agent (all platforms, Windows files included) to that: no package that
// starts processes is imported, no process-starting call is made, and no Windows tool is named.
func TestAgentStartsNoProcess(t *testing.T) {
	forbiddenImports := map[string]bool{"os/exec": true}
	forbidden := regexp.MustCompile(`(?i)powershell|pwsh|manage-bde|cmd\.exe|wmic|\bStartProcess\b|CreateProcess|ShellExecute|WinExec|\bForkExec\b|` +
		`Get-BitLockerVolume|Enable-BitLocker|Remove-BitLockerKeyProtector|Add-BitLockerKeyProtector|Get-WinEvent|Get-CimInstance`)
	scanned := 0
	for _, root := range []string{".", "../../cmd/keyward-agent"} {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") ||
				strings.Contains(filepath.ToSlash(path), "agenttest/") {
				return nil // agenttest starts the keyward server for tests; it is never in the agent
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			f, err := parser.ParseFile(token.NewFileSet(), path, src, parser.ImportsOnly)
			if err != nil {
				return err
			}
			for _, imp := range f.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				if forbiddenImports[p] {
					t.Errorf("%s imports %s", path, p)
				}
			}
			// Comments may explain what is avoided; the code may not do it.
			code := stripComments(string(src))
			if m := forbidden.FindString(code); m != "" {
				t.Errorf("%s names %q", path, m)
			}
			scanned++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if scanned < 20 {
		t.Fatalf("only %d files scanned", scanned)
	}
}

var comments = regexp.MustCompile(`(?m)//.*$|/\*(?s:.*?)\*/`)

func stripComments(s string) string { return comments.ReplaceAllString(s, "") }
