package main

import (
	"net"
	"os"
	"os/exec"
	"testing"

	"github.com/keyward/keyward/internal/testkit"
)

func TestMain(m *testing.M) { testkit.Main(m) }

// testBinary builds the keyward binary once for the tests that run it as a process.
func testBinary(t testing.TB) string {
	t.Helper()
	return testkit.Binary(t, "github.com/keyward/keyward/cmd/keyward")
}

// process is a keyward binary running `serve`.
type process struct {
	cmd *exec.Cmd
	url string
}

// serveProcess starts `keyward serve` with the arguments on a free port and waits until healthy.
func serveProcess(t testing.TB, args ...string) *process {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(testBinary(t), append([]string{"serve", "--listen", addr}, args...)...)
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, url: "http://" + addr}
	t.Cleanup(func() { p.stop() })
	waitHealthy(t, p.url)
	return p
}

// stop ends the server as an operator would, with SIGTERM, and waits for it.
func (p *process) stop() {
	if p.cmd.ProcessState == nil {
		p.cmd.Process.Signal(os.Interrupt)
		p.cmd.Wait()
	}
}
