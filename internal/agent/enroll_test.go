package agent_test

import (
	"context"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/agent"
	"github.com/keyward/keyward/internal/agent/agenttest"
	"github.com/keyward/keyward/internal/agent/bitlocker/bitlockersim"
)

func TestEnroll(t *testing.T) {
	srv := agenttest.StartServer(t)
	enroll := func(dir, server, token string, force bool) (string, error) {
		return agent.Enroll(context.Background(), agent.EnrollOptions{StateDir: dir, ServerURL: server, Token: token,
			Force: force, Info: agent.DeviceInfo{Hostname: "LT-ENROLL"}})
	}
	dir := t.TempDir()
	first, err := enroll(dir, srv.URL+"/", srv.EnrollToken, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := enroll(dir, srv.URL, srv.EnrollToken, false); err == nil || !strings.Contains(err.Error(), "already enrolled as device "+first) {
		t.Fatalf("second enrollment: %v", err)
	}
	second, err := enroll(dir, srv.URL, srv.EnrollToken, true)
	if err != nil || second == first {
		t.Fatalf("forced enrollment: %q, %v", second, err)
	}
	st, err := agent.ReadStatus(dir)
	if err != nil || st.DeviceID != second || st.ServerURL != srv.URL {
		t.Fatalf("status %+v, %v", st, err)
	}
	if runtime.GOOS != "windows" {
		for name, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, "state.json"): 0o600} {
			fi, err := os.Stat(name)
			if err != nil || fi.Mode().Perm() != want {
				t.Errorf("%s has mode %v, want %v", name, fi.Mode().Perm(), want)
			}
		}
	}

	bad := []struct{ name, server, token, want string }{
		{"wrong token", srv.URL, "kwe_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "refused the enrollment token"},
		{"no token", srv.URL, "", "no enrollment token"},
		{"plain http to another machine", "http://keyward.example.com", srv.EnrollToken, "must be https"},
		{"not a URL", "keyward.example.com", srv.EnrollToken, "must be like https://"},
		{"credentials in the URL", "https://user:pw@keyward.example.com", srv.EnrollToken, "must be like https://"},
		{"nothing listening", "http://127.0.0.1:1", srv.EnrollToken, "enrolling"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := enroll(t.TempDir(), tt.server, tt.token, false)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}

	t.Run("not enrolled", func(t *testing.T) {
		_, err := agent.New(agent.Config{StateDir: t.TempDir(), BitLocker: bitlockersim.New(1).System()})
		if !errors.Is(err, agent.ErrNotEnrolled) {
			t.Fatalf("New on an empty state directory: %v", err)
		}
	})
}

// TLS is verified: a server with a certificate from a private CA is trusted only with that
// CA's certificate given as --ca-file.
func TestPrivateCA(t *testing.T) {
	srv := agenttest.StartServer(t)
	target, _ := url.Parse(srv.URL)
	front := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(target))
	front.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	front.StartTLS()
	defer front.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: front.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := agent.EnrollOptions{StateDir: t.TempDir(), ServerURL: front.URL, Token: srv.EnrollToken, Info: agent.DeviceInfo{Hostname: "LT-TLS"}}
	if _, err := agent.Enroll(context.Background(), opts); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("enrolled with an untrusted certificate: %v", err)
	}
	opts.CAFile = ca
	if _, err := agent.Enroll(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	// The CA file is kept for run.
	a, err := agent.New(agent.Config{StateDir: opts.StateDir, BitLocker: bitlockersim.New(2).System()})
	if err != nil {
		t.Fatal(err)
	}
	err = a.Cycle(context.Background())
	a.Close()
	if err != nil {
		t.Fatal(err)
	}
	opts.CAFile = filepath.Join(t.TempDir(), "missing.pem")
	opts.Force = true
	if _, err := agent.Enroll(context.Background(), opts); err == nil || !strings.Contains(err.Error(), "CA file") {
		t.Fatalf("a missing CA file: %v", err)
	}
}

// The client sends its User-Agent, follows no redirect, and reads no answer without bound.
func TestHostileServer(t *testing.T) {
	var ua string
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"huge answer", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(201)
			w.Write([]byte(`{"deviceId":"` + strings.Repeat("x", 2<<20) + `"}`))
		}, "larger than"},
		{"redirect elsewhere", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://elsewhere.example.com/", http.StatusTemporaryRedirect)
		}, "server answered 307"},
		{"not JSON", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(201); w.Write([]byte("<html>")) }, "not the JSON expected"},
		{"no verification key", func(w http.ResponseWriter, r *http.Request) {
			ua = r.Header.Get("User-Agent")
			w.WriteHeader(201)
			w.Write([]byte(`{"deviceId":"d","deviceToken":"kwd_x"}`))
		}, "lacks the device ID, token or verification key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hs := httptest.NewServer(tt.handler)
			defer hs.Close()
			_, err := agent.Enroll(context.Background(), agent.EnrollOptions{StateDir: t.TempDir(), ServerURL: hs.URL, Token: "kwe_x", Version: "1.2.3"})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
	if ua != "keyward-agent/1.2.3" {
		t.Fatalf("User-Agent %q", ua)
	}
}

func TestOneAgentPerStateDirectory(t *testing.T) {
	srv := agenttest.StartServer(t)
	r := newRig(t, srv, 600)
	if _, err := agent.New(r.cfg); !errors.Is(err, agent.ErrLocked) {
		t.Fatalf("a second agent on the same state directory: %v", err)
	}
	if _, err := agent.Enroll(context.Background(), agent.EnrollOptions{StateDir: r.dir, ServerURL: srv.URL, Token: srv.EnrollToken, Force: true}); !errors.Is(err, agent.ErrLocked) {
		t.Fatalf("enrolling under a running agent: %v", err)
	}
	r.a.Close()
	a, err := agent.New(r.cfg)
	if err != nil {
		t.Fatalf("after Close: %v", err)
	}
	r.a = a
}
