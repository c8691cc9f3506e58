package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/bitlockertest"
)

// requireCryptsetup skips the test without cryptsetup and xz, unless
// KEYWARD_TEST_REQUIRE_CRYPTSETUP=1 makes that a failure (CI sets it).
func requireCryptsetup(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"cryptsetup", "xz"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("KEYWARD_TEST_REQUIRE_CRYPTSETUP") == "1" {
				t.Fatalf("%s is required (KEYWARD_TEST_REQUIRE_CRYPTSETUP=1) but not installed", tool)
			}
			t.Skipf("%s not installed (set KEYWARD_TEST_REQUIRE_CRYPTSETUP=1 to make this a failure)", tool)
		}
	}
}

// unlocks reports whether cryptsetup opens the image's volume key with the recovery password.
func unlocks(t *testing.T, img, password string) bool {
	t.Helper()
	kf := filepath.Join(t.TempDir(), "kf")
	if err := os.WriteFile(kf, []byte(password), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("cryptsetup", "bitlkDump", "--dump-volume-key", "--batch-mode", "--key-file", kf, img).CombinedOutput()
	if err != nil {
		return false
	}
	if !bytes.Contains(out, []byte("MK dump:")) {
		t.Fatalf("cryptsetup exited 0 but printed no volume key:\n%s", out)
	}
	return true
}

func decompress(t *testing.T, file string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "volume.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stderr bytes.Buffer
	xz := exec.Command("xz", "-dc", filepath.Join(bitlockertest.Dir(t), file))
	xz.Stdout, xz.Stderr = f, &stderr
	if err := xz.Run(); err != nil {
		t.Fatalf("xz: %v %s", err, stderr.String())
	}
	return img
}

type listedKey struct {
	KeyID, DeviceID, DeviceName, Status string
}

func lookUp(t *testing.T, url, admin, prefix string) []listedKey {
	t.Helper()
	var list struct{ Items []listedKey }
	if err := json.Unmarshal(mustCall(t, 200, "GET", url+"/api/devices/security/bitlocker/keys?keyId="+prefix, admin, ""), &list); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func auditActions(t *testing.T, url, admin, action string) []struct{ DeviceID, KeyID, Source, Detail string } {
	t.Helper()
	var list struct {
		Items []struct{ DeviceID, KeyID, Source, Detail string }
	}
	if err := json.Unmarshal(mustCall(t, 200, "GET", url+"/api/devices/security/bitlocker/keys/audit?limit=1000&action="+action, admin, ""), &list); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// TestImportCSVRealSamples imports the real BitLocker samples from a CSV in the CrowdStrike
// export's columns; each is then found by the eight characters the recovery screen shows, and
// the password Keyward gives back unlocks its image in cryptsetup.
func TestImportCSVRealSamples(t *testing.T) {
	requireCryptsetup(t)
	dir := t.TempDir()
	r := start(t, dir, nil)
	admin, enrolled, _, _ := setUp(t, r.URL(), dir)
	mustCall(t, 200, "PUT", r.URL()+"/api/settings", admin, `{"autoRotateOnDisclosure":false}`)

	images := bitlockertest.Images(t)
	host := map[string]string{} // key ID → hostname in the CSV
	var csv strings.Builder
	csv.WriteString("\ufeff\"Hostname\",\"KeyID\",\"RecoveryKey\"\r\n")
	for i, im := range images {
		if _, dup := host[im.KeyID]; dup {
			continue // two images of one volume: one protector
		}
		h := fmt.Sprintf("WS-%02d", i)
		if i == 0 {
			h = "lt-0042" // the enrolled device, named in another case
		}
		host[im.KeyID] = h
		id := im.KeyID
		if i%2 == 1 {
			id = "{" + strings.ToLower(id) + "}" // as manage-bde prints it
		}
		fmt.Fprintf(&csv, "%q,%q,%q\r\n", h, id, im.Password)
	}
	bad := "111111-222222-333333-444444-555555-666666-777777-888888"
	csv.WriteString("\"WS-99\",\"AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE\",\"" + bad + "\"\r\n")
	badLine := len(host) + 2
	file := filepath.Join(t.TempDir(), "BitlockerKeys.csv")
	if err := os.WriteFile(file, []byte(csv.String()), 0o600); err != nil {
		t.Fatal(err)
	}

	code, out, stderr := cli(t, dir, "", "import", "csv", "--file", file, "--dry-run")
	if code != 1 || !strings.Contains(out, fmt.Sprintf("would import %d keys", len(host))) || !strings.Contains(out, "nothing was stored") {
		t.Fatalf("dry run: exit %d\n%s%s", code, out, stderr)
	}
	if keys := lookUp(t, r.URL(), admin, images[0].KeyID[:8]); len(keys) != 0 {
		t.Fatalf("a dry run stored %+v", keys)
	}

	code, out, stderr = cli(t, dir, "", "import", "csv", "--file", file)
	if code != 1 || !strings.Contains(out, fmt.Sprintf("imported %d keys (%d new device records)", len(host), len(host)-1)) {
		t.Fatalf("import: exit %d\n%s%s", code, out, stderr)
	}
	// The bad entry is named by its line and field, and never printed.
	if !strings.Contains(out, fmt.Sprintf("line %d: invalid WS-99 key AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE: recoveryPassword: block 7 is too large", badLine)) ||
		strings.Contains(out+stderr, "111111") || !strings.Contains(stderr, "1 records skipped") {
		t.Fatalf("the invalid entry:\n%s%s", out, stderr)
	}
	events := auditActions(t, r.URL(), admin, "key.import")
	if len(events) != len(host) {
		t.Fatalf("%d key.import events, want %d", len(events), len(host))
	}
	for _, e := range events {
		if e.Source != "cli" || !strings.Contains(e.Detail, "csv "+file) {
			t.Fatalf("event %+v", e)
		}
	}

	for i, im := range images {
		t.Run(im.Image, func(t *testing.T) {
			keys := lookUp(t, r.URL(), admin, im.KeyID[:8])
			if len(keys) != 1 || keys[0].KeyID != im.KeyID || !strings.EqualFold(keys[0].DeviceName, host[im.KeyID]) {
				t.Fatalf("looking up %s: %+v", im.KeyID[:8], keys)
			}
			if i == 0 && keys[0].DeviceID != enrolled {
				t.Errorf("the key of lt-0042 went to %s, not the enrolled device %s", keys[0].DeviceID, enrolled)
			}
			pw := viewKeys(t, r.URL(), admin, keys[0].DeviceID)[im.KeyID]
			img := decompress(t, im.Image)
			if !unlocks(t, img, pw) {
				t.Fatalf("the imported password of %s does not unlock %s", im.KeyID, im.Image)
			}
			if i == 0 && unlocks(t, img, images[len(images)-1].Password) {
				t.Fatal("another volume's password unlocks the image: the check proves nothing")
			}
		})
	}

	// Again: nothing is imported, nothing is recorded.
	code, out, _ = cli(t, dir, "", "import", "csv", "--file", file)
	if code != 1 || !strings.Contains(out, fmt.Sprintf("imported 0 keys (0 new device records), %d already held", len(host))) {
		t.Fatalf("second import: exit %d\n%s", code, out)
	}
	if n := len(auditActions(t, r.URL(), admin, "key.import")); n != len(host) {
		t.Fatalf("the second import recorded %d more key.import events", n-len(host))
	}
}
