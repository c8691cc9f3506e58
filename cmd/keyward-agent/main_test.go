package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/agent"
	"github.com/keyward/keyward/internal/agent/agenttest"
	"github.com/keyward/keyward/internal/agent/bitlocker"
	"github.com/keyward/keyward/internal/agent/bitlocker/bitlockersim"
)

// The command is tested in-process through Run, against a real server process. Where Windows
// would provide BitLocker, the simulator stands in.

func TestMain(m *testing.M) { agenttest.Main(m) }

func runCmd(t *testing.T, ctx context.Context, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Run(ctx, args, &stdout, &stderr, func(k string) string { return env[k] })
	return code, stdout.String(), stderr.String()
}

func TestUsage(t *testing.T) {
	tests := []struct {
		args []string
		code int
		out  string // in stdout or stderr
	}{
		{nil, exitUsage, "Usage:"},
		{[]string{"help"}, exitOK, "keyward-agent enroll --server URL"},
		{[]string{"version"}, exitOK, "keyward-agent dev"},
		{[]string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{[]string{"enroll"}, exitUsage, "--server and --token (or --token-file) are required"},
		{[]string{"enroll", "--server", "https://k.example.com", "--token", "t", "--token-file", "f"}, exitUsage, "not both"},
		{[]string{"enroll", "--server", "https://k.example.com", "--token-file", filepath.Join(os.TempDir(), "keyward-no-such-token")}, exitError, "reading the enrollment token file"},
		{[]string{"enroll", "--server", "https://k.example.com", "--token", "t", "extra"}, exitUsage, `unexpected argument "extra"`},
		{[]string{"run", "--poll-interval", "1s"}, exitUsage, "--poll-interval at least 10s"},
		{[]string{"run", "--log-level", "loud", "--state-dir", "x"}, exitUsage, ""},
		{[]string{"status", "--state-dir", filepath.Join(os.TempDir(), "keyward-agent-none")}, exitError, "not enrolled"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runCmd(t, context.Background(), nil, tt.args...)
			if code != tt.code || !strings.Contains(stdout+stderr, tt.out) {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s\nwant %q", code, tt.code, stdout, stderr, tt.out)
			}
		})
	}
}

func TestServiceArgs(t *testing.T) {
	dir := t.TempDir()
	f, err := parseRun("install", []string{"--encrypt-os-volume", "--report-interval", "2h"}, env{getenv: func(k string) string {
		return map[string]string{"KEYWARD_AGENT_STATE_DIR": dir, "KEYWARD_AGENT_LOG_LEVEL": "debug"}[k]
	}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.serviceArgs()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"run", "--state-dir", dir, "--log-level", "debug", "--report-interval", "2h0m0s", "--poll-interval", "5m0s",
		"--activate-device-encryption=true", "--encrypt-os-volume"}
	if !slices.Equal(got, want) {
		t.Fatalf("service arguments %q, want %q", got, want)
	}
}

func TestWindowsOnly(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the service commands work here")
	}
	for _, args := range [][]string{{"install"}, {"uninstall"}, {"run", "--state-dir", t.TempDir()}} {
		code, _, stderr := runCmd(t, context.Background(), nil, args...)
		if code != exitError || !strings.Contains(stderr, "Windows only") {
			t.Errorf("%v: exit %d, %s", args, code, stderr)
		}
	}
}

// TestEnrollRunStatus enrolls with the token from the environment, runs the agent until the
// server holds the device's recovery password, stops it as Ctrl+C would, shows the status, and
// finally sees a refused token end run with its own exit code.
func TestEnrollRunStatus(t *testing.T) {
	srv := agenttest.StartServer(t)
	dir := t.TempDir()
	env := map[string]string{"KEYWARD_AGENT_STATE_DIR": dir, "KEYWARD_AGENT_TOKEN": srv.EnrollToken}
	code, stdout, stderr := runCmd(t, context.Background(), env, "enroll", "--server", srv.URL, "--owner", "alice@example.com")
	if code != exitOK {
		t.Fatalf("enroll: exit %d: %s", code, stderr)
	}
	deviceID := strings.TrimSpace(stdout)

	sim := bitlockersim.New(9)
	pw := agenttest.Passwords(t)[0]
	sim.AddVolume(bitlockersim.VolumeSpec{MountPoint: "C:", Type: bitlocker.OperatingSystem, ProtectionStatus: bitlocker.ProtectionOn,
		EncryptionStatus: bitlocker.FullyEncrypted, Protectors: []bitlockersim.ProtectorSpec{{Type: bitlocker.TPM}, {Type: bitlocker.RecoveryPassword, Password: pw}}})
	keyID := sim.Snapshot()[0].Protectors[1].KeyID
	newBitLocker = func() (bitlocker.BitLocker, error) { return sim.System(), nil }
	t.Cleanup(func() { newBitLocker = systemBitLocker })

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var runCode int
	var runErr string
	go func() {
		defer close(done)
		runCode, _, runErr = runCmd(t, ctx, env, "run", "--log-level", "debug")
	}()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if k, ok := srv.Keys(deviceID)[keyID]; ok && k.Verification == "verified" {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("the server never held the verified key; run said:\n%s", runErr)
		}
	}
	cancel()
	<-done
	if runCode != exitOK || !strings.Contains(runErr, "reported") || strings.Contains(runErr, pw) {
		t.Fatalf("run: exit %d, log:\n%s", runCode, runErr)
	}

	code, stdout, _ = runCmd(t, context.Background(), env, "status")
	if code != exitOK || !strings.Contains(stdout, deviceID) || !strings.Contains(stdout, keyID+"  escrowed") {
		t.Fatalf("status: exit %d:\n%s", code, stdout)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stdout, st["deviceToken"].(string)) || strings.Contains(stdout, st["verificationKey"].(string)) || bytes.Contains(raw, []byte(pw)) {
		t.Fatal("status shows a secret, or the state holds the password")
	}

	tok := st["deviceToken"].(string)
	st["deviceToken"] = tok[:len(tok)-6] + "AAAAAA"
	raw, _ = json.Marshal(st)
	if err := os.WriteFile(filepath.Join(dir, "state.json"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runCmd(t, context.Background(), env, "run")
	if code != exitRevoked || !strings.Contains(stderr, "enroll again") {
		t.Fatalf("run with a refused token: exit %d: %s", code, stderr)
	}
}

// As a service the agent logs to agent.log in the state directory, keeps one older log when
// it grows, and records there why it stopped.
func TestServiceLog(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, "agent.log")
	if err := os.WriteFile(old, bytes.Repeat([]byte("x"), maxLogSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	newBitLocker = func() (bitlocker.BitLocker, error) { return bitlockersim.New(1).System(), nil }
	t.Cleanup(func() { newBitLocker = systemBitLocker })
	f, err := parseRun("run", []string{"--state-dir", dir}, env{getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	if err := runAgent(context.Background(), f, nil); err == nil {
		t.Fatal("the agent ran on a state directory without enrollment")
	}
	if fi, err := os.Stat(old + ".1"); err != nil || fi.Size() != maxLogSize+1 {
		t.Fatalf("the full log was not kept as agent.log.1: %v", err)
	}
	b, err := os.ReadFile(old)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "the agent stopped") || !strings.Contains(string(b), "not enrolled") {
		t.Fatalf("agent.log: %s", b)
	}
}

// The enrollment token can come from a file, so deployment tools never put it on a command
// line; a byte-order mark and the final newline an editor leaves are not part of it.
func TestEnrollTokenFile(t *testing.T) {
	srv := agenttest.StartServer(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(t.TempDir(), "token.txt")
	if err := os.WriteFile(tokenFile, []byte("\uFEFF"+srv.EnrollToken+"\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCmd(t, context.Background(), map[string]string{"KEYWARD_AGENT_STATE_DIR": dir}, "enroll", "--server", srv.URL, "--token-file", tokenFile)
	if code != exitOK || strings.TrimSpace(stdout) == "" {
		t.Fatalf("enroll --token-file: exit %d: %s", code, stderr)
	}
	empty := filepath.Join(t.TempDir(), "empty.txt")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runCmd(t, context.Background(), map[string]string{"KEYWARD_AGENT_STATE_DIR": t.TempDir()}, "enroll", "--server", srv.URL, "--token-file", empty); code != exitError || !strings.Contains(stderr, "is empty") {
		t.Fatalf("an empty token file: exit %d: %s", code, stderr)
	}
}

// The MSI leaves the server and the token for the service's first start: run enrolls with them,
// deletes a token given directly, and leaves an enrolled device as it is.
func TestEnrollPending(t *testing.T) {
	srv := agenttest.StartServer(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(srv.EnrollToken), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		pending pendingEnrollment
		cleared bool
	}{
		{"token file", pendingEnrollment{Server: srv.URL, TokenFile: tokenFile, Owner: "bob@example.com"}, false},
		{"token", pendingEnrollment{Server: srv.URL, Token: srv.EnrollToken}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cleared := 0
			pendingEnrollments = func() (pendingEnrollment, bool) { return tt.pending, true }
			clearToken = func() error { cleared++; return nil }
			t.Cleanup(func() { pendingEnrollments, clearToken = readPendingEnrollment, clearPendingToken })
			log := slog.New(slog.DiscardHandler)
			if err := enrollPending(context.Background(), dir, log); err != nil {
				t.Fatal(err)
			}
			st, err := agent.ReadStatus(dir)
			if err != nil {
				t.Fatal(err)
			}
			if tt.cleared != (cleared == 1) {
				t.Fatalf("the token was cleared %d times", cleared)
			}
			// Once enrolled, nothing happens again (the token is cleared if it is still there).
			if err := enrollPending(context.Background(), dir, log); err != nil {
				t.Fatal(err)
			}
			again, err := agent.ReadStatus(dir)
			if err != nil || again.DeviceID != st.DeviceID {
				t.Fatalf("enrolled again: %v", err)
			}
		})
	}
	pendingEnrollments = func() (pendingEnrollment, bool) { return pendingEnrollment{Server: srv.URL}, true }
	t.Cleanup(func() { pendingEnrollments = readPendingEnrollment })
	if err := enrollPending(context.Background(), t.TempDir(), slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "no enrollment token") {
		t.Fatalf("a server without a token: %v", err)
	}
}

// uninstall --purge deletes only a directory that holds the agent's state.
func TestPurgeStateDir(t *testing.T) {
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "notes.txt"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := purgeStateDir(other); err == nil {
		t.Fatal("a directory without agent state was purged")
	}
	if _, err := os.Stat(filepath.Join(other, "notes.txt")); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "Keyward")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := purgeStateDir(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the state directory is still there: %v", err)
	}
}
