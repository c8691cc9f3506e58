package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/bitlockertest"
	"github.com/keyward/keyward/internal/seal"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/testkit"
)

// running is a keyward server started in-process exactly as `keyward serve` starts it.
type running struct {
	*Server
	logs *testkit.Buffer
	stop func()
}

func start(t *testing.T, dir string, extraEnv map[string]string) *running {
	t.Helper()
	return startWith(t, dir, extraEnv, nil)
}

// startWith is start with adjust applied to the server after its flags are read, for settings
// that have no flag.
func startWith(t *testing.T, dir string, extraEnv map[string]string, adjust func(*Server)) *running {
	t.Helper()
	env := map[string]string{"KEYWARD_DATA_DIR": dir, "KEYWARD_LISTEN": "127.0.0.1:0", "KEYWARD_LOG_LEVEL": "debug"}
	for k, v := range extraEnv {
		env[k] = v
	}
	s := NewServer()
	if err := s.ParseFlags(nil, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if adjust != nil {
		adjust(s)
	}
	logs := &testkit.Buffer{}
	if err := s.Open(context.Background(), logs); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	r := &running{Server: s, logs: logs}
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve ended with %v", err)
			}
		})
	}
	t.Cleanup(r.stop)
	return r
}

// cli runs a keyward admin command in-process and returns its exit code and output.
func cli(t *testing.T, dir, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Run(context.Background(), append(args, "--data-dir", dir), strings.NewReader(stdin), &out, &errOut, func(string) string { return "" })
	return code, out.String(), errOut.String()
}

// cliRunner returns a function that runs a command on dir, fails the test unless it exits
// with want, and returns what it printed.
func cliRunner(t *testing.T, dir string) func(want int, args ...string) string {
	return func(want int, args ...string) string {
		t.Helper()
		code, out, stderr := cli(t, dir, "", args...)
		if code != want {
			t.Fatalf("%v: exit %d, want %d: %s%s", args, code, want, out, stderr)
		}
		return out + stderr
	}
}

func call(t testing.TB, method, url, token, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

func mustCall(t testing.TB, want int, method, url, token, body string) []byte {
	t.Helper()
	status, b := call(t, method, url, token, body)
	if status != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, url, status, want, b)
	}
	return b
}

// setUp creates an admin with an API token through the CLI, and enrolls one device.
func setUp(t *testing.T, url, dir string) (admin, deviceID, deviceToken string, secrets []string) {
	t.Helper()
	if code, _, stderr := cli(t, dir, "", "users", "add", "--email", "admin@example.com", "--role", "admin"); code != 0 {
		t.Fatalf("users add: %d %s", code, stderr)
	}
	code, out, stderr := cli(t, dir, "", "tokens", "create", "--user", "admin@example.com", "--name", "ci")
	if code != 0 {
		t.Fatalf("tokens create: %d %s", code, stderr)
	}
	// Only the token, so that scripts can capture it.
	if !regexp.MustCompile(`^kwt_[0-9a-f]{16}_[A-Za-z0-9_-]{43}\n$`).MatchString(out) {
		t.Fatalf("tokens create printed %q", out)
	}
	admin = strings.TrimSpace(out)
	code, out, stderr = cli(t, dir, "", "enroll-tokens", "create", "--uses", "5", "--expires", "1d")
	if code != 0 || !strings.HasPrefix(out, "kwe_") {
		t.Fatalf("enroll-tokens create: %d %q %s", code, out, stderr)
	}
	enroll := strings.TrimSpace(out)
	var d struct{ DeviceID, DeviceToken, VerificationKey string }
	b := mustCall(t, 201, "POST", url+"/api/agent/enroll", "", fmt.Sprintf(`{"enrollmentToken":%q,"hostname":"LT-0042","ownerUpn":"alice@example.com"}`, enroll))
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	return admin, d.DeviceID, d.DeviceToken, []string{admin, enroll, d.DeviceToken, d.VerificationKey}
}

func escrowJSON(password string) string {
	return fmt.Sprintf(`{"volumeId":"\\\\?\\Volume{6a3c}\\","mountPoint":"C:","volumeType":"operatingSystem","kind":"recoveryPassword","recoveryPassword":%q}`, password)
}

func TestFirstStart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fresh")
	r := start(t, dir, nil)
	mustCall(t, 200, "GET", r.URL()+"/healthz", "", "")
	mustCall(t, 200, "GET", r.URL()+"/readyz", "", "")
	fi, err := os.Stat(filepath.Join(dir, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("master key mode %v, want 0600", fi.Mode().Perm())
	}
	if di, err := os.Stat(dir); err != nil || di.Mode().Perm() != 0o700 {
		t.Fatalf("data directory: %v %v", di.Mode(), err)
	}
	raw, err := sql.Open("sqlite", "file:"+filepath.Join(dir, store.DatabaseFile))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var mode string
	if err := raw.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode %q (%v), want wal", mode, err)
	}
	r.stop()
	if _, err := http.Get(r.URL() + "/healthz"); err == nil {
		t.Fatal("server still answers after shutdown")
	}
}

func TestMasterKeyProblemsStopStartUp(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir, nil)
	r.stop()

	t.Run("wrong key", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other.key")
		master, err := seal.Generate()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(other, master, 0o600); err != nil {
			t.Fatal(err)
		}
		s := NewServer()
		s.DataDir, s.Listen, s.MasterKeyFile = dir, "127.0.0.1:0", other
		err = s.Open(context.Background(), io.Discard)
		if err == nil || !strings.Contains(err.Error(), "does not match") {
			s.Close()
			t.Fatalf("start with another master key: %v", err)
		}
	})
	t.Run("damaged key", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.key")
		if err := os.WriteFile(bad, []byte(`{"primaryKeyId": 12, "key": [`), 0o600); err != nil {
			t.Fatal(err)
		}
		s := NewServer()
		s.DataDir, s.Listen, s.MasterKeyFile = dir, "127.0.0.1:0", bad
		err := s.Open(context.Background(), io.Discard)
		if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "damaged") {
			s.Close()
			t.Fatalf("start with a damaged master key: %v", err)
		}
	})
}

func TestTokenWorksAndCLIRunsBesideServer(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir, nil)
	admin, deviceID, _, _ := setUp(t, r.URL(), dir)
	b := mustCall(t, 200, "GET", r.URL()+"/api/devices", admin, "")
	if !strings.Contains(string(b), deviceID) {
		t.Fatalf("device list %s lacks %s", b, deviceID)
	}
	mustCall(t, 401, "GET", r.URL()+"/api/devices", admin+"x", "")
	if code, _, stderr := cli(t, dir, "", "users", "add", "--email", "admin@example.com", "--role", "admin"); code == 0 || !strings.Contains(stderr, "already exists") {
		t.Fatalf("duplicate user: %d %s", code, stderr)
	}
	if code, _, stderr := cli(t, dir, "", "users", "add", "--email", "x@example.com", "--role", "root"); code == 0 || !strings.Contains(stderr, "role") {
		t.Fatalf("bad role: %d %s", code, stderr)
	}
	if code, _, stderr := cli(t, dir, "short\n", "users", "add", "--email", "y@example.com", "--role", "helpdesk", "--password-stdin"); code == 0 || !strings.Contains(stderr, "at least") {
		t.Fatalf("short password: %d %s", code, stderr)
	}
	if code, _, stderr := cli(t, dir, "a long enough password\n", "users", "add", "--email", "z@example.com", "--role", "helpdesk", "--password-stdin"); code != 0 {
		t.Fatalf("users add with password: %d %s", code, stderr)
	}
}

func TestAuditVerifyNamesEditedRow(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir, nil)
	admin, deviceID, deviceToken, _ := setUp(t, r.URL(), dir)
	s := bitlockertest.Samples(t)[0]
	mustCall(t, 201, "PUT", r.URL()+"/api/agent/keys/"+s.KeyID, deviceToken, escrowJSON(s.Password))
	mustCall(t, 200, "GET", r.URL()+"/api/devices/security/bitlocker/keys/"+deviceID+"?reason=test", admin, "")

	code, out, stderr := cli(t, dir, "", "audit", "verify")
	if code != 0 || !strings.Contains(out, "intact") {
		t.Fatalf("audit verify on a whole chain: %d %q %q", code, out, stderr)
	}
	raw, err := sql.Open("sqlite", "file:"+filepath.Join(dir, store.DatabaseFile)+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var seq int64
	if err := raw.QueryRow(`SELECT seq FROM audit_events WHERE action = 'key.read'`).Scan(&seq); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`UPDATE audit_events SET reason = 'nothing to see' WHERE seq = $1`, seq); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = cli(t, dir, "", "audit", "verify")
	if code == 0 || !strings.Contains(stderr, fmt.Sprintf("seq %d", seq)) {
		t.Fatalf("audit verify after editing seq %d: exit %d, %q", seq, code, stderr)
	}
}

func TestNoPlaintextOnDisk(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir, nil)
	_, _, deviceToken, _ := setUp(t, r.URL(), dir)
	samples := bitlockertest.Samples(t)
	for _, s := range samples {
		mustCall(t, 201, "PUT", r.URL()+"/api/agent/keys/"+s.KeyID, deviceToken, escrowJSON(s.Password))
	}
	// Read the files while the server runs, so the WAL still holds the recent writes.
	files, _ := filepath.Glob(filepath.Join(dir, store.DatabaseFile+"*"))
	if len(files) < 2 {
		t.Fatalf("database files %v: want the database and its WAL", files)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range samples {
			for _, form := range []string{s.Password, strings.ReplaceAll(s.Password, "-", ""), s.Password[:20]} {
				if bytes.Contains(b, []byte(form)) {
					t.Fatalf("%s holds recovery password material of %s in plain text", filepath.Base(f), s.KeyID)
				}
			}
		}
	}
}

// TestWholeFlowKeepsSecretsOutOfLogs runs a full flow, errors included, with every log line
// the server and the CLI write captured, and looks for every secret in them.
func TestWholeFlowKeepsSecretsOutOfLogs(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir, nil)
	admin, deviceID, deviceToken, secrets := setUp(t, r.URL(), dir)
	samples := bitlockertest.Samples(t)
	for _, s := range samples[:5] {
		mustCall(t, 201, "PUT", r.URL()+"/api/agent/keys/"+s.KeyID, deviceToken, escrowJSON(s.Password))
		secrets = append(secrets, s.Password, strings.ReplaceAll(s.Password, "-", ""))
	}
	bad := samples[6].Password[:49] + "000001" // last block not a multiple of 11
	mustCall(t, 400, "PUT", r.URL()+"/api/agent/keys/"+samples[6].KeyID, deviceToken, escrowJSON(bad))
	mustCall(t, 409, "PUT", r.URL()+"/api/agent/keys/"+samples[0].KeyID, deviceToken, escrowJSON(samples[7].Password))
	secrets = append(secrets, bad, samples[7].Password)
	mustCall(t, 200, "GET", r.URL()+"/api/devices/security/bitlocker/keys/"+deviceID+"?reason=test", admin, "")
	mustCall(t, 401, "GET", r.URL()+"/api/devices", deviceToken, "")
	mustCall(t, 401, "GET", r.URL()+"/api/devices", otherLastChar(admin), "")
	mustCall(t, 400, "PUT", r.URL()+"/api/agent/keys/"+samples[1].KeyID, deviceToken, `{"recoveryPassword":"`+samples[1].Password+`","extra":1}`)
	mustCall(t, 202, "POST", r.URL()+"/api/devices/security/bitlocker/keys/"+deviceID+"/rotate", admin, "")
	mustCall(t, 200, "GET", r.URL()+"/api/devices/security/bitlocker/keys/audit?format=csv", admin, "")
	_, cliOut, cliErr := cli(t, dir, "", "audit", "verify")

	master, err := os.ReadFile(filepath.Join(dir, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	var keyset struct {
		Key []struct{ KeyData struct{ Value string } }
	}
	if err := json.Unmarshal(master, &keyset); err != nil || len(keyset.Key) == 0 || keyset.Key[0].KeyData.Value == "" {
		t.Fatalf("master key file not understood: %v", err)
	}
	secrets = append(secrets, keyset.Key[0].KeyData.Value)
	r.stop()

	logs := r.logs.String() + cliOut + cliErr
	if !strings.Contains(logs, `"path":"/api/agent/keys/`) {
		t.Fatalf("requests were not logged, the test would prove nothing:\n%s", logs)
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("a secret (%d characters, starting %.4s) appears in the logs", len(s), s)
		}
	}
}

func TestFlagsAndEnvironment(t *testing.T) {
	s := NewServer()
	env := map[string]string{"KEYWARD_DATA_DIR": "/env/dir", "KEYWARD_LISTEN": "127.0.0.1:9999"}
	if err := s.ParseFlags([]string{"--listen", "127.0.0.1:7777"}, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if s.DataDir != "/env/dir" || s.Listen != "127.0.0.1:7777" {
		t.Fatalf("data dir %q listen %q: the flag must win over the environment, the environment over the default", s.DataDir, s.Listen)
	}
	d := NewServer()
	if err := d.ParseFlags(nil, func(string) string { return "" }); err != nil || d.DataDir != "./keyward-data" || d.Listen != "127.0.0.1:8080" {
		t.Fatalf("defaults %q %q %v", d.DataDir, d.Listen, err)
	}
	if err := NewServer().ParseFlags([]string{"--tls-cert", "x.pem"}, func(string) string { return "" }); err == nil {
		t.Fatal("a certificate without a key was accepted")
	}
	if code := Run(context.Background(), []string{"frobnicate"}, nil, io.Discard, io.Discard, os.Getenv); code != 2 {
		t.Fatalf("unknown command exit %d, want 2", code)
	}
}

func waitHealthy(t testing.TB, url string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if res, err := http.Get(url + "/healthz"); err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not become healthy", url)
}

// otherLastChar returns the token with its last character changed: a near miss.
func otherLastChar(tok string) string {
	last := byte('A')
	if tok[len(tok)-1] == 'A' {
		last = 'B'
	}
	return tok[:len(tok)-1] + string(last)
}
