package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version and commit are set at build time by scripts/packages
// (-ldflags "-X main.version=… -X main.commit=…"); a plain go build reports "dev" and the
// commit the go command recorded, if any.
var (
	version = "dev"
	commit  = ""
)

// versionCmd prints the version, the commit and the Go version the binary was built with.
func versionCmd(args []string, env cliEnv) error {
	fs := newFlags("version")
	if err := parse(fs, args, env.getenv); err != nil {
		return err
	}
	c := commit
	if c == "" {
		c = "unknown"
		if info, ok := debug.ReadBuildInfo(); ok {
			for _, s := range info.Settings {
				if s.Key == "vcs.revision" {
					c = s.Value
				}
			}
		}
	}
	fmt.Fprintf(env.stdout, "keyward %s (commit %s, %s, %s/%s)\n", version, c, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
