package main

import (
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

// requireProgram returns the path of an outside program a test runs (looked up on PATH, then in
// /usr/sbin), skipping the test when it is not installed, or failing it when requireEnv is set
// to 1, as CI does.
func requireProgram(t *testing.T, name, requireEnv string) string {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err == nil {
		return bin
	}
	bin = "/usr/sbin/" + name
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv(requireEnv) == "1" {
			t.Fatalf("%s is required (%s=1) but not installed", name, requireEnv)
		}
		t.Skipf("%s not installed (set %s=1 to make this a failure)", name, requireEnv)
	}
	return bin
}

// waitListening waits until something accepts connections at addr, failing the test with the
// program's output after 10 s.
func waitListening(t *testing.T, addr, name string, logs interface{ String() string }) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not start:\n%s", name, logs.String())
		}
	}
}
