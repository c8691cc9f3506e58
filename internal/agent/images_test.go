package agent_test

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/agent/agenttest"
	"github.com/keyward/keyward/internal/agent/bitlocker"
	"github.com/keyward/keyward/internal/agent/bitlocker/bitlockersim"
)

// requireTools skips the test when a tool is missing, unless KEYWARD_TEST_REQUIRE_CRYPTSETUP=1
// (CI sets it), when it fails instead.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("KEYWARD_TEST_REQUIRE_CRYPTSETUP") == "1" {
				t.Fatalf("%s is required (KEYWARD_TEST_REQUIRE_CRYPTSETUP=1) but not installed", tool)
			}
			t.Skipf("%s not installed (set KEYWARD_TEST_REQUIRE_CRYPTSETUP=1 to make this a failure)", tool)
		}
	}
}

var (
	keyslotLine    = regexp.MustCompile(`^\s*[0-9]+:\s`)
	keyslotGUID    = regexp.MustCompile(`^\s*GUID:\s*([0-9a-fA-F-]{36})\s*$`)
	keyslotProtect = regexp.MustCompile(`^\s*Protection:\s*(.*?)\s*$`)
)

// recoveryKeyslots returns the GUIDs of the keyslots `cryptsetup bitlkDump` lists as "VMK
// protected with recovery passphrase": the recovery-password protectors.
func recoveryKeyslots(dump string) []string {
	var out []string
	inSlots := false
	var guid, protection string
	flush := func() {
		if protection == "VMK protected with recovery passphrase" && guid != "" {
			out = append(out, guid)
		}
		guid, protection = "", ""
	}
	sc := bufio.NewScanner(strings.NewReader(dump))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "Keyslots:"):
			inSlots = true
		case strings.HasPrefix(line, "Metadata segments:"):
			flush()
			inSlots = false
		case !inSlots:
		case keyslotLine.MatchString(line):
			flush()
		case keyslotGUID.MatchString(line):
			guid = keyslotGUID.FindStringSubmatch(line)[1]
		case keyslotProtect.MatchString(line):
			protection = keyslotProtect.FindStringSubmatch(line)[1]
		}
	}
	flush()
	return out
}

// TestRealImages escrows the recovery passwords of real BitLocker volumes made on Windows,
// under the protector GUIDs cryptsetup reads from the volumes, finds each through the API by
// the first 8 characters of its key ID, and unlocks the volume with the password the server
// gives back.
func TestRealImages(t *testing.T) {
	requireTools(t, "cryptsetup", "xz")
	srv := agenttest.StartServer(t)
	srv.Must(200, "PUT", "/api/settings", map[string]any{"autoRotateOnDisclosure": false}, nil)
	all := agenttest.Images(t)
	var files []string
	for _, im := range all {
		if !slices.Contains(files, im.File) {
			files = append(files, im.File)
		}
	}
	// Every image beside the README is tested: one left out of the table would go unnoticed.
	onDisk, err := filepath.Glob(filepath.Join(agenttest.SamplesDir(t), "*.img.xz"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range onDisk {
		if !slices.Contains(files, filepath.Base(p)) {
			t.Errorf("image %s is not in the samples README's table", filepath.Base(p))
		}
	}
	if len(files) != len(onDisk) {
		t.Fatalf("the README lists %d images, the directory holds %d", len(files), len(onDisk))
	}
	for i, file := range files {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			img := filepath.Join(t.TempDir(), "volume.img")
			f, err := os.Create(img)
			if err != nil {
				t.Fatal(err)
			}
			var xzErr bytes.Buffer
			xz := exec.Command("xz", "-dkc", filepath.Join(agenttest.SamplesDir(t), file))
			xz.Stdout, xz.Stderr = f, &xzErr
			if err := xz.Run(); err != nil {
				t.Fatalf("xz: %v %s", err, xzErr.String())
			}
			f.Close()
			dump, err := exec.Command("cryptsetup", "bitlkDump", img).CombinedOutput()
			if err != nil {
				t.Fatalf("cryptsetup bitlkDump: %v\n%s", err, dump)
			}
			guids := recoveryKeyslots(string(dump))
			var want []string
			for _, im := range all {
				if im.File == file {
					want = append(want, im.GUID)
				}
			}
			slices.Sort(guids)
			slices.Sort(want)
			if len(guids) == 0 || !slices.Equal(guids, want) {
				t.Fatalf("cryptsetup lists recovery keyslots %v, the samples README %v", guids, want)
			}

			// The volume as Windows would show it to the agent: its recovery passwords under
			// the GUIDs on the volume, beside the password protector the images have.
			r := newRig(t, srv, uint64(500+i))
			vt := bitlocker.FixedData
			if strings.Contains(file, "togo") {
				vt = bitlocker.Removable
			}
			spec := bitlockersim.VolumeSpec{MountPoint: "E:", Type: vt, ProtectionStatus: bitlocker.ProtectionOn,
				EncryptionStatus: bitlocker.FullyEncrypted, Protectors: []bitlockersim.ProtectorSpec{{Type: bitlocker.Password}}}
			for _, g := range guids {
				for _, im := range all {
					if im.File == file && im.GUID == g {
						spec.Protectors = append(spec.Protectors, bitlockersim.ProtectorSpec{
							KeyID: strings.ToUpper(g), Type: bitlocker.RecoveryPassword, Password: im.Password})
					}
				}
			}
			r.sim.AddVolume(spec)
			r.settle()

			for _, g := range guids {
				keyID := strings.ToUpper(g)
				var list struct{ Items []agenttest.Key }
				srv.Must(200, "GET", "/api/devices/security/bitlocker/keys?keyId="+keyID[:8], nil, &list)
				at := slices.IndexFunc(list.Items, func(k agenttest.Key) bool { return k.DeviceID == r.deviceID })
				if at < 0 || list.Items[at].KeyID != keyID || list.Items[at].Verification != "verified" {
					t.Fatalf("looking up %s: %+v", keyID[:8], list.Items)
				}
				pw := srv.Disclose(r.deviceID, "Forgotten+PIN")[keyID].RecoveryPassword
				if pw == "" {
					t.Fatalf("no recovery password disclosed for %s", keyID)
				}
				if err := unlock(t, img, pw); err != nil {
					t.Fatalf("the escrowed recovery password of %s does not unlock the volume: %v", keyID, err)
				}
				if i == 0 {
					// Once is enough to show the check can fail: a valid recovery password of
					// another volume does not unlock this one.
					other := all[slices.IndexFunc(all, func(im agenttest.Image) bool { return im.Password != pw })].Password
					if unlock(t, img, other) == nil {
						t.Fatal("a wrong recovery password unlocks the volume: the check proves nothing")
					}
				}
			}
			r.noMaterialAnywhere()
		})
	}
}

// unlock asks cryptsetup for the volume key with the recovery password as the key file; only
// the recovery-passphrase keyslot can open with it.
func unlock(t *testing.T, img, password string) error {
	kf := filepath.Join(t.TempDir(), "kf")
	if err := os.WriteFile(kf, []byte(password), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command("cryptsetup", "bitlkDump", "--dump-volume-key", "--batch-mode", "--key-file", kf, img)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return err
	}
	if !strings.Contains(out.String(), "MK dump:") {
		t.Fatalf("cryptsetup exited 0 but printed no volume key:\n%s", out.String())
	}
	return nil
}
