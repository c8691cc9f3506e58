package agenttest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
)

// The server under test is the real keyward binary, built from this checkout and run as a
// process: the agent's tests import no server code, as the agent itself does not.

// Main runs the tests of a package that starts servers and removes the built binary after.
// Call it from TestMain.
func Main(m *testing.M) { testkit.Main(m) }

// binary builds cmd/keyward once per test process.
func binary(t testing.TB) string {
	t.Helper()
	return testkit.Binary(t, "github.com/keyward/keyward/cmd/keyward")
}

// Server is a keyward server process with an admin and an API token, and an enrollment token
// for any number of devices.
type Server struct {
	URL         string // http://127.0.0.1:PORT
	Dir         string // the data directory
	AdminToken  string
	EnrollToken string
	bin         string
	cmd         *exec.Cmd
	t           testing.TB
}

// serverEnv is the environment of server processes: the test's, without KEYWARD_* variables,
// which the server would read as flags.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEYWARD_") {
			env = append(env, kv)
		}
	}
	return env
}

// StartServer starts `keyward serve` on a free port with a fresh data directory, waits until it
// is healthy, and creates an admin with an API token and an enrollment token. It is stopped
// when the test ends.
func StartServer(t testing.TB) *Server {
	t.Helper()
	s := &Server{Dir: t.TempDir(), bin: binary(t), t: t}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s.URL = "http://" + addr
	s.cmd = exec.Command(s.bin, "serve", "--data-dir", s.Dir, "--listen", addr, "--log-level", "warn")
	s.cmd.Env = serverEnv()
	var logs bytes.Buffer
	s.cmd.Stdout, s.cmd.Stderr = &logs, &logs
	if testing.Verbose() {
		s.cmd.Stderr = os.Stderr
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(s.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server did not become healthy: %v\n%s", err, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.CLI("users", "add", "--data-dir", s.Dir, "--email", "admin@example.com", "--role", "admin")
	s.AdminToken = strings.TrimSpace(s.CLI("tokens", "create", "--data-dir", s.Dir, "--user", "admin@example.com"))
	s.EnrollToken = strings.TrimSpace(s.CLI("enroll-tokens", "create", "--data-dir", s.Dir))
	if !strings.HasPrefix(s.AdminToken, "kwt_") || !strings.HasPrefix(s.EnrollToken, "kwe_") {
		t.Fatalf("unexpected tokens from the CLI: %q, %q", s.AdminToken, s.EnrollToken)
	}
	return s
}

// stop ends the server as an operator would, with an interrupt, and waits for it.
func (s *Server) stop() {
	if s.cmd.Process == nil || s.cmd.ProcessState != nil {
		return
	}
	s.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
}

// CLI runs an admin command of the server binary and returns its standard output.
func (s *Server) CLI(args ...string) string {
	s.t.Helper()
	cmd := exec.Command(s.bin, args...)
	cmd.Env = serverEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		s.t.Fatalf("keyward %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// Do sends a request with the admin token and decodes a JSON answer into out (when not nil).
// It returns the status.
func (s *Server) Do(method, path string, body, out any) int {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			s.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, s.URL+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			s.t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

// Must is Do that fails the test unless the answer has the status want.
func (s *Server) Must(want int, method, path string, body, out any) {
	s.t.Helper()
	if got := s.Do(method, path, body, out); got != want {
		s.t.Fatalf("%s %s: status %d, want %d", method, path, got, want)
	}
}

// Key is a key as the API lists and discloses it.
type Key struct {
	KeyID            string `json:"keyId"`
	DeviceID         string `json:"deviceId"`
	VolumeID         string `json:"volumeId"`
	Kind             string `json:"kind"`
	Status           string `json:"status"`
	Verification     string `json:"verification"`
	RecoveryPassword string `json:"recoveryPassword"`
	RecoveryKey      string `json:"recoveryKey"`
}

// Keys lists a device's keys by key ID (metadata only).
func (s *Server) Keys(deviceID string) map[string]Key {
	s.t.Helper()
	var list struct{ Items []Key }
	s.Must(http.StatusOK, "GET", "/api/devices/security/bitlocker/keys?limit=1000&deviceId="+deviceID, nil, &list)
	out := map[string]Key{}
	for _, k := range list.Items {
		out[k.KeyID] = k
	}
	return out
}

// Disclose views a device's keys with their material, for a reason (audited). With
// autoRotateOnDisclosure on, the server then asks the device to rotate.
func (s *Server) Disclose(deviceID, reason string) map[string]Key {
	s.t.Helper()
	var v struct{ Keys []Key }
	s.Must(http.StatusOK, "GET", "/api/devices/security/bitlocker/keys/"+deviceID+"?reason="+reason, nil, &v)
	out := map[string]Key{}
	for _, k := range v.Keys {
		out[k.KeyID] = k
	}
	return out
}

// Device is a device as GET /api/devices/{id} shows it.
type Device struct {
	DeviceID           string `json:"deviceId"`
	EscrowStatus       string `json:"escrowStatus"`
	EscrowStatusReason string `json:"escrowStatusReason"`
	Volumes            []struct {
		VolumeID      string `json:"volumeId"`
		EscrowStatus  string `json:"escrowStatus"`
		KeyProtectors []struct{ KeyID, Type string }
	} `json:"volumes"`
}

// Device returns a device with its escrow status.
func (s *Server) Device(deviceID string) Device {
	s.t.Helper()
	var d Device
	s.Must(http.StatusOK, "GET", "/api/devices/"+deviceID, nil, &d)
	return d
}

// Rotate requests the rotation of a volume's recovery password.
func (s *Server) Rotate(deviceID, volumeID string) {
	s.t.Helper()
	s.Must(http.StatusAccepted, "POST", "/api/devices/security/bitlocker/keys/"+deviceID+"/rotate",
		map[string]string{"volumeId": volumeID, "reason": "test"}, nil)
}

// auditEvent is an audit event as the API lists it.
type auditEvent struct {
	Action string `json:"action"`
	KeyID  string `json:"keyId"`
	Detail string `json:"detail"`
}

// Audit returns the actions of a device's audit events, oldest first.
func (s *Server) Audit(deviceID string) []string {
	s.t.Helper()
	var list struct{ Items []auditEvent }
	s.Must(http.StatusOK, "GET", "/api/devices/security/bitlocker/keys/audit?limit=1000&deviceId="+deviceID, nil, &list)
	out := make([]string, len(list.Items))
	for i, e := range list.Items {
		out[len(out)-1-i] = e.Action
	}
	return out
}

// AuditDetails returns the details of a device's audit events, oldest first: what the agent's
// failure events said, among others.
func (s *Server) AuditDetails(deviceID string) []string {
	s.t.Helper()
	var list struct{ Items []auditEvent }
	s.Must(http.StatusOK, "GET", "/api/devices/security/bitlocker/keys/audit?limit=1000&deviceId="+deviceID, nil, &list)
	out := make([]string, len(list.Items))
	for i, e := range list.Items {
		out[len(out)-1-i] = e.Detail
	}
	return out
}
