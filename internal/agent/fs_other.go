//go:build !unix && !windows

package agent

import "os"

func replaceFile(from, to string) error { return os.Rename(from, to) }

func secureDir(dir string) error { return nil }

// lockDir does not lock on platforms without file locks; the agent only runs on Windows, and
// its tests on Unix.
func lockDir(dir string) (*os.File, error) { return nil, nil }
