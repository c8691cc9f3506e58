//go:build !windows

package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"

	"github.com/keyward/keyward/internal/agent"
	"github.com/keyward/keyward/internal/agent/bitlocker"
)

// servicesSupported is whether install and uninstall can work here.
const servicesSupported = false

// defaultStateDir is where the agent keeps its state elsewhere than on Windows; the agent only
// manages BitLocker on Windows, but enroll and status work anywhere.
func defaultStateDir() string { return "/var/lib/keyward-agent" }

func systemBitLocker() (bitlocker.BitLocker, error) {
	return nil, fmt.Errorf("run: %w", errNotWindows)
}

func deviceInfo(context.Context) agent.DeviceInfo {
	host, _ := os.Hostname()
	return agent.DeviceInfo{Hostname: host, OSVersion: runtime.GOOS + "/" + runtime.GOARCH}
}

func windowsEdition() string { return "" }

func isWindowsService() bool { return false }

func runService(func(context.Context) error) error { return errNotWindows }

func installService([]string) (string, error) { return "", errNotWindows }

func withEventLog(log *slog.Logger) *slog.Logger { return log }

// readPendingEnrollment reads the MSI's registry key on Windows; elsewhere there is none (tests set
// pendingEnrollments).
func readPendingEnrollment() (pendingEnrollment, bool) { return pendingEnrollment{}, false }

func clearPendingToken() error { return nil }

func uninstallService() error { return errNotWindows }
