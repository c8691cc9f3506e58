//go:build !unix && !windows

package agent

import (
	"net/http"
	"net/url"
	"os"
)

func replaceFile(from, to string) error { return os.Rename(from, to) }

type osDirOps struct{}

func (osDirOps) Create(dir string) error             { return os.Mkdir(dir, 0o700) }
func (osDirOps) Inspect(dir string) (dirInfo, error) { return dirInfo{OwnerTrusted: true}, nil }
func (osDirOps) Secure(dir string) error             { return nil }

func protectSecret(s string) (string, error)   { return s, nil }
func unprotectSecret(s string) (string, error) { return s, nil }

// lockDir does not lock on platforms without file locks; the agent only runs on Windows, and
// its tests on Unix.
func lockDir(dir string) (*os.File, error) { return nil, nil }

func systemProxy() func(*http.Request) (*url.URL, error) { return http.ProxyFromEnvironment }
