package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/keyward/keyward/internal/bitlockertest"
)

// TestBreakGlassExportRecover exports every key of a seeded installation (escrowed by an agent
// and imported) to an age recipient, and recovers each one from the file alone.
func TestBreakGlassExportRecover(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir, nil)
	admin, deviceID, deviceToken, _ := setUp(t, r.URL(), dir)
	samples := bitlockertest.Samples(t)
	escrowed, imported := samples[:3], samples[3:]
	for _, s := range escrowed {
		mustCall(t, 201, "PUT", r.URL()+"/api/agent/keys/"+s.KeyID, deviceToken, escrowJSON(s.Password))
	}
	var csv strings.Builder
	csv.WriteString("hostname,keyId,recoveryPassword,ownerUpn\n")
	for i, s := range imported {
		fmt.Fprintf(&csv, "WS-%02d,%s,%s,user%d@example.com\n", i, s.KeyID, s.Password, i)
	}
	csvFile := filepath.Join(t.TempDir(), "keys.csv")
	if err := os.WriteFile(csvFile, []byte(csv.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, stderr := cli(t, dir, "", "import", "csv", "--file", csvFile); code != 0 {
		t.Fatalf("import: %d %s%s", code, out, stderr)
	}

	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	other, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	keys := t.TempDir()
	idFile, otherFile, recFile := filepath.Join(keys, "id.txt"), filepath.Join(keys, "other.txt"), filepath.Join(keys, "recipients.txt")
	for f, text := range map[string]string{idFile: id.String(), otherFile: other.String(), recFile: "# the security officer\n" + id.Recipient().String() + "\n"} {
		if err := os.WriteFile(f, []byte(text+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(t.TempDir(), "keyward-keys.age")
	before := len(auditActions(t, r.URL(), admin, "key.read"))

	// Refused before anything is opened: no reason, no recipient, a private key as recipient.
	for _, args := range [][]string{
		{"export", "--out", out, "--recipient", id.Recipient().String()},
		{"export", "--out", out, "--reason", "offline copy"},
		{"export", "--out", out, "--reason", "offline copy", "--recipient", id.String()},
	} {
		if code, _, stderr := cli(t, dir, "", args...); code != 2 || strings.Contains(stderr, id.String()) {
			t.Fatalf("%v: exit %d %s", args, code, stderr)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("a refused export wrote the file")
	}

	code, stdout, stderr := cli(t, dir, "", "export", "--out", out, "--recipient-file", recFile, "--reason", "quarterly offline copy")
	fp := recipientFingerprint([]string{id.Recipient().String()})
	if code != 0 || !strings.Contains(stdout, fmt.Sprintf("%d keys written", len(samples))) || !strings.Contains(stdout, fp) {
		t.Fatalf("export: %d %s%s", code, stdout, stderr)
	}
	assertNoPlaintext(t, out, passwords(samples))
	if info, err := os.Stat(out); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("the copy: %v %v", info, err)
	}
	events := auditActions(t, r.URL(), admin, "key.export")
	if len(events) != 1 || !strings.Contains(events[0].Detail, fmt.Sprintf("%d keys", len(samples))) || !strings.Contains(events[0].Detail, fp) || events[0].Source != "cli" {
		t.Fatalf("key.export events: %+v", events)
	}
	if n := len(auditActions(t, r.URL(), admin, "key.read")); n != before {
		t.Errorf("the export recorded %d key.read events: it is one disclosure", n-before)
	}

	// With the server stopped and its data directory gone: the file and the identity are enough.
	r.stop()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	for i, s := range samples {
		code, stdout, stderr := recoverCLI(t, "--bundle", out, "--identity", idFile, "--key-id", strings.ToLower(s.KeyID[:8]))
		if code != 0 || !strings.Contains(stdout, "Recovery password: "+s.Password+"\n") || !strings.Contains(stdout, "Recovery key ID: "+s.KeyID) {
			t.Fatalf("recover %s: %d %s%s", s.KeyID[:8], code, stdout, stderr)
		}
		wantDevice := "Device LT-0042 (" + deviceID + ", owner alice@example.com)"
		if i >= len(escrowed) {
			wantDevice = fmt.Sprintf("Device WS-%02d (", i-len(escrowed))
		}
		if !strings.Contains(stdout, wantDevice) {
			t.Errorf("recover %s: %s, want %s", s.KeyID[:8], stdout, wantDevice)
		}
	}
	code, _, stderr = recoverCLI(t, "--bundle", out, "--identity", otherFile, "--key-id", samples[0].KeyID[:8])
	if code != 1 || !strings.Contains(stderr, "does not open") || !strings.Contains(stderr, "another recipient") {
		t.Fatalf("a wrong identity: %d %s", code, stderr)
	}
	code, _, stderr = recoverCLI(t, "--bundle", out, "--identity", idFile, "--key-id", "FFFFFFFF")
	if code != 1 || !strings.Contains(stderr, fmt.Sprintf("no key in %s (%d keys", out, len(samples))) {
		t.Fatalf("an unknown key ID: %d %s", code, stderr)
	}
}

// recoverCLI runs "keyward recover", which takes no data directory.
func recoverCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Run(context.Background(), append([]string{"recover"}, args...), strings.NewReader(""), &out, &errOut, func(string) string { return "" })
	return code, out.String(), errOut.String()
}

func passwords(ss []bitlockertest.Sample) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Password)
	}
	return out
}
