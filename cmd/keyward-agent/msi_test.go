package main

import (
	"debug/pe"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// upgradeCode is the MSI's UpgradeCode: it must never change, or a new package would install
// beside the old one instead of upgrading it.
const upgradeCode = "{7D2C0F4E-6C43-4B4B-9C1B-2B5E6E1D9A47}"

// TestMSI builds both packages with scripts/build-msi and reads their tables back with
// msitools: the service is installed and started as LocalSystem from Program Files, the msiexec
// properties are secure and the token hidden, the enrollment key is locked down, upgrades are
// found by the stable UpgradeCode, and each package carries an agent for its architecture.
// Without wixl and msitools the test is skipped, unless KEYWARD_TEST_REQUIRE_MSITOOLS=1 (CI).
func TestMSI(t *testing.T) {
	for _, tool := range []string{"wixl", "msibuild", "msiinfo", "msiextract"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("KEYWARD_TEST_REQUIRE_MSITOOLS") == "1" {
				t.Fatalf("%s is required (KEYWARD_TEST_REQUIRE_MSITOOLS=1): apt-get install wixl msitools", tool)
			}
			t.Skipf("%s not installed (apt-get install wixl msitools)", tool)
		}
	}
	if testing.Short() {
		t.Skip("builds two Windows binaries")
	}
	out := t.TempDir()
	cmd := exec.Command("../../scripts/build-msi", "1.4.7", out)
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build-msi: %v\n%s", err, b)
	}
	for _, tt := range []struct {
		arch, template string
		machine        uint16
	}{
		{"amd64", "x64;1033", pe.IMAGE_FILE_MACHINE_AMD64},
		{"arm64", "Arm64;1033", pe.IMAGE_FILE_MACHINE_ARM64},
	} {
		t.Run(tt.arch, func(t *testing.T) {
			msi := filepath.Join(out, "keyward-agent-1.4.7-"+tt.arch+".msi")
			if !strings.Contains(msiinfo(t, "suminfo", msi), "Template: "+tt.template+"\n") {
				t.Fatalf("summary information:\n%s", msiinfo(t, "suminfo", msi))
			}
			props := table(t, msi, "Property")
			for k, want := range map[string]string{
				"UpgradeCode": upgradeCode, "ProductVersion": "1.4.7", "ALLUSERS": "1", "MsiHiddenProperties": "ENROLL_TOKEN",
				"SecureCustomProperties": "WIX_DOWNGRADE_DETECTED;WIX_UPGRADE_DETECTED;SERVER_URL;ENROLL_TOKEN_FILE;ENROLL_TOKEN;OWNER",
			} {
				if got := row(t, props, k); got[1] != want {
					t.Errorf("property %s = %v, want %q", k, got, want)
				}
			}
			// ServiceInstall: own process (16), automatic (2), error control normal (1), LocalSystem, run.
			svc := row(t, table(t, msi, "ServiceInstall"), "KeywardAgentService")
			if want := []string{"KeywardAgentService", "keyward-agent", "Keyward agent", "16", "2", "1", "", "", "LocalSystem", "", "run", "AgentExe"}; !slices.Equal(svc[:12], want) {
				t.Errorf("ServiceInstall %q, want %q", svc, want)
			}
			// ServiceControl: started at install (1), stopped at install and uninstall (2|32),
			// removed at uninstall (128), waiting for each.
			if ctl := row(t, table(t, msi, "ServiceControl"), "KeywardAgentServiceControl"); !slices.Equal(ctl[:6], []string{"KeywardAgentServiceControl", "keyward-agent", "163", "", "1", "AgentExe"}) {
				t.Errorf("ServiceControl %q", ctl)
			}
			if d := row(t, table(t, msi, "Directory"), "INSTALLDIR"); !slices.Equal(d[:3], []string{"INSTALLDIR", "ProgramFiles64Folder", "Keyward"}) {
				t.Errorf("INSTALLDIR %q, want Program Files\\Keyward", d)
			}
			if f := row(t, table(t, msi, "File"), "KeywardAgentExe"); f[1] != "AgentExe" || f[2] != "keyward-agent.exe" {
				t.Errorf("File %q", f)
			}
			if c := row(t, table(t, msi, "Component"), "AgentExe"); c[2] != "INSTALLDIR" || c[3] != "256" {
				t.Errorf("Component %q, want a 64-bit component in INSTALLDIR", c)
			}
			reg := table(t, msi, "Registry")
			for id, want := range map[string][]string{
				"RegServerUrl":       {"2", `SOFTWARE\Keyward\Agent\`, "ServerUrl", "[SERVER_URL]"},
				"RegEnrollTokenFile": {"2", `SOFTWARE\Keyward\Agent\`, "EnrollTokenFile", "[ENROLL_TOKEN_FILE]"},
				"RegEnrollToken":     {"2", `SOFTWARE\Keyward\Agent\`, "EnrollToken", "[ENROLL_TOKEN]"},
				"RegOwner":           {"2", `SOFTWARE\Keyward\Agent\`, "Owner", "[OWNER]"},
				"RegEventMessageFile": {"2", `SYSTEM\CurrentControlSet\Services\EventLog\Application\Keyward\`, "EventMessageFile",
					"[System64Folder]EventCreate.exe"},
			} {
				if got := row(t, reg, id); !slices.Equal(got[1:5], want) {
					t.Errorf("Registry %s = %q, want %q", id, got, want)
				}
			}
			locks := table(t, msi, "MsiLockPermissionsEx")
			for _, id := range []string{"LockEnrollmentKey", "LockEnrollmentToken"} {
				if l := row(t, locks, id); l[2] != "Registry" || l[3] != "D:P(A;;GA;;;SY)(A;;GA;;;BA)" {
					t.Errorf("MsiLockPermissionsEx %q", l)
				}
			}
			var upgrades int
			for _, r := range table(t, msi, "Upgrade") {
				if r[0] == upgradeCode {
					upgrades++
				}
			}
			if upgrades != 2 {
				t.Errorf("%d Upgrade rows for the UpgradeCode, want the upgrade and the downgrade check", upgrades)
			}
			seq := table(t, msi, "InstallExecuteSequence")
			for _, action := range []string{"RemoveExistingProducts", "WriteRegistryValues", "InstallServices", "StartServices", "StopServices", "DeleteServices", "RemoveFiles"} {
				if !slices.ContainsFunc(seq, func(r []string) bool { return r[0] == action }) {
					t.Errorf("InstallExecuteSequence lacks %s", action)
				}
			}
			// The agent inside is a Windows executable for the package's architecture.
			dir := t.TempDir()
			if b, err := exec.Command("msiextract", "-C", dir, msi).CombinedOutput(); err != nil {
				t.Fatalf("msiextract: %v\n%s", err, b)
			}
			var exe string
			filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.Name() == "keyward-agent.exe" {
					exe = p
				}
				return nil
			})
			if !strings.Contains(filepath.ToSlash(exe), "Keyward/keyward-agent.exe") {
				t.Fatalf("keyward-agent.exe extracted to %q, want under Keyward", exe)
			}
			f, err := pe.Open(exe)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Machine != tt.machine {
				t.Fatalf("the agent's machine type is %#x, want %#x", f.Machine, tt.machine)
			}
		})
	}
}

func msiinfo(t *testing.T, args ...string) string {
	t.Helper()
	b, err := exec.Command("msiinfo", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("msiinfo %v: %v\n%s", args, err, b)
	}
	return string(b)
}

// table exports a table and returns its rows (the three header lines dropped), split at tabs.
func table(t *testing.T, msi, name string) [][]string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(strings.ReplaceAll(msiinfo(t, "export", msi, name), "\r\n", "\n"), "\n"), "\n")
	if len(lines) < 3 {
		t.Fatalf("table %s: %q", name, lines)
	}
	var rows [][]string
	for _, l := range lines[3:] {
		rows = append(rows, strings.Split(l, "\t"))
	}
	return rows
}

// row returns the row whose first column is key, padded to 16 columns; the test fails without.
func row(t *testing.T, rows [][]string, key string) []string {
	t.Helper()
	for _, r := range rows {
		if r[0] == key {
			for len(r) < 16 {
				r = append(r, "")
			}
			return r
		}
	}
	t.Fatalf("no row %s", key)
	return nil
}
