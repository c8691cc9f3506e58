package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/keyward/keyward/internal/bitlockertest"
)

// TestKilledAfter201KeepsKey kills the real binary with SIGKILL the moment it has answered 201
// to an escrow: an acknowledged key must survive, because 201 is only sent once it is durable.
func TestKilledAfter201KeepsKey(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := testBinary(t)
	dir := t.TempDir()
	serve := func() (*exec.Cmd, string) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		cmd := exec.Command(bin, "serve", "--data-dir", dir, "--listen", addr)
		if testing.Verbose() {
			cmd.Stderr = os.Stderr
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		waitHealthy(t, "http://"+addr)
		return cmd, "http://" + addr
	}
	cmd, url := serve()
	admin, deviceID, deviceToken, _ := setUp(t, url, dir)
	samples := bitlockertest.Samples(t)
	for _, s := range samples[:3] {
		mustCall(t, 201, "PUT", url+"/api/agent/keys/"+s.KeyID, deviceToken, escrowJSON(s.Password))
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	_, url = serve()
	var v struct {
		Keys []struct{ KeyID, RecoveryPassword string }
	}
	if err := json.Unmarshal(mustCall(t, 200, "GET", url+"/api/devices/security/bitlocker/keys/"+deviceID+"?reason=after+crash", admin, ""), &v); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, k := range v.Keys {
		got[k.KeyID] = k.RecoveryPassword
	}
	for _, s := range samples[:3] {
		if got[s.KeyID] != s.Password {
			t.Errorf("key %s acknowledged with 201 is gone after SIGKILL: %v", s.KeyID, fmt.Sprint(got[s.KeyID] != ""))
		}
	}
}
