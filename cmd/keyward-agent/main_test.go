package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

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
		{[]string{"enroll"}, exitUsage, "--server and --token are required"},
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
	want := []string{"run", "--state-dir", dir, "--log-level", "debug", "--report-interval", "2h0m0s", "--poll-interval", "5m0s", "--encrypt-os-volume"}
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
