package main

import (
	"runtime"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	code, out, errOut := run(t, "version")
	if code != 0 {
		t.Fatalf("keyward version exited %d: %s", code, errOut)
	}
	// A test build carries no -ldflags: "dev", and the Go version it was built with.
	if !strings.HasPrefix(out, "keyward dev (commit ") || !strings.Contains(out, runtime.Version()) {
		t.Errorf("keyward version printed %q; want the version, the commit and %s", out, runtime.Version())
	}
}
