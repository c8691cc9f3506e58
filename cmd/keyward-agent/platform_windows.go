//go:build windows

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/registry"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/eventlog"
	"golang.org/x/sys/windows/svc/mgr"

	"github.com/keyward/keyward/internal/agent"
	"github.com/keyward/keyward/internal/agent/bitlocker"
)

// servicesSupported is whether install and uninstall can work here.
const servicesSupported = true

const serviceName = "keyward-agent"

// defaultStateDir is %ProgramData%\Keyward. The agent replaces the directory's access list so
// that only SYSTEM and administrators can open it (see the agent's state handling): the
// default %ProgramData% entries would let every user read the device token.
func defaultStateDir() string {
	pd := os.Getenv("ProgramData")
	if pd == "" {
		pd = `C:\ProgramData`
	}
	return filepath.Join(pd, "Keyward")
}

// wmi is the process's one connection to WMI (one COM thread).
var wmi = bitlocker.NewWindowsWMI()

func systemBitLocker() (bitlocker.BitLocker, error) {
	return &bitlocker.System{WMI: wmi, Events: bitlocker.WindowsEventLog{}, Policy: bitlocker.WindowsEncryptionPolicy}, nil
}

// deviceInfo describes the device for enrollment: host name, Windows version with its update
// revision (10.0.26100.2033, from the registry), and the firmware's serial number.
func deviceInfo(ctx context.Context) agent.DeviceInfo {
	info := agent.DeviceInfo{}
	info.Hostname, _ = os.Hostname()
	if k, err := registry.OpenKey(registry.LOCAL_MACHINE, `SOFTWARE\Microsoft\Windows NT\CurrentVersion`, registry.QUERY_VALUE); err == nil {
		major, _, err1 := k.GetIntegerValue("CurrentMajorVersionNumber")
		minor, _, err2 := k.GetIntegerValue("CurrentMinorVersionNumber")
		build, _, err3 := k.GetStringValue("CurrentBuildNumber")
		ubr, _, err4 := k.GetIntegerValue("UBR")
		if err1 == nil && err2 == nil && err3 == nil {
			info.OSVersion = fmt.Sprintf("%d.%d.%s", major, minor, build)
			if err4 == nil {
				info.OSVersion += "." + strconv.FormatUint(ubr, 10)
			}
			// The edition tells the server why a Home device never gets BitLocker turned on.
			if ed := windowsEdition(); ed != "" {
				info.OSVersion += " " + ed
			}
		}
		k.Close()
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if serial, err := wmi.BIOSSerialNumber(ctx); err == nil {
		info.SerialNumber = serial
	}
	return info
}

// windowsEdition is the EditionID of Windows: Professional, Enterprise, Education, Core (Home),
// ServerStandard, ...; empty when it cannot be read.
func windowsEdition() string {
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, `SOFTWARE\Microsoft\Windows NT\CurrentVersion`, registry.QUERY_VALUE)
	if err != nil {
		return ""
	}
	defer k.Close()
	ed, _, err := k.GetStringValue("EditionID")
	if err != nil {
		return ""
	}
	return ed
}

func isWindowsService() bool {
	ok, err := svc.IsWindowsService()
	return err == nil && ok
}

// runService runs the agent under the service control manager until it is told to stop.
func runService(run func(ctx context.Context) error) error {
	return svc.Run(serviceName, &handler{run: run})
}

type handler struct {
	run func(ctx context.Context) error
}

// Execute implements svc.Handler. A revoked device token stops the service without an error
// code, so the service manager does not restart it every minute for nothing; any other
// failure returns a code, and the recovery actions set at install restart it.
func (h *handler) Execute(_ []string, requests <-chan svc.ChangeRequest, status chan<- svc.Status) (bool, uint32) {
	status <- svc.Status{State: svc.StartPending}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.run(ctx) }()
	const accepts = svc.AcceptStop | svc.AcceptShutdown
	status <- svc.Status{State: svc.Running, Accepts: accepts}
	for {
		select {
		case c := <-requests:
			switch c.Cmd {
			case svc.Interrogate:
				status <- c.CurrentStatus
			case svc.Stop, svc.Shutdown:
				status <- svc.Status{State: svc.StopPending}
				cancel()
				<-done
				return false, 0
			}
		case err := <-done:
			if err == nil || errors.Is(err, agent.ErrRevoked) {
				return false, 0
			}
			return true, exitError
		}
	}
}

// installService copies the running binary to %ProgramFiles%\Keyward (unless it runs from
// there, as after the MSI), creates the service on that copy (automatic, delayed start, as
// LocalSystem, which BitLocker management needs; error control normal, so a failure to start
// is logged; an unrestricted service SID), sets it to restart after failures, registers the
// event log source and starts it. It returns the path the service runs.
//
// The service runs as SYSTEM, so its binary must be somewhere only administrators can change:
// from a Downloads folder, an unelevated process could replace it.
func installService(args []string) (string, error) {
	src, err := os.Executable()
	if err != nil {
		return "", err
	}
	m, err := mgr.Connect()
	if err != nil {
		return "", fmt.Errorf("install: connecting to the service manager (run as administrator): %w", err)
	}
	defer m.Disconnect()
	if s, err := m.OpenService(serviceName); err == nil {
		s.Close()
		return "", errors.New("install: the keyward-agent service is already installed; uninstall it first")
	}
	dir := filepath.Join(programFiles(), "Keyward")
	exe := filepath.Join(dir, "keyward-agent.exe")
	if !strings.EqualFold(filepath.Clean(src), exe) {
		if err := installBinary(src, dir, exe); err != nil {
			return "", fmt.Errorf("install: copying the agent to %s: %w", dir, err)
		}
	}
	s, err := m.CreateService(serviceName, exe, mgr.Config{
		DisplayName:      "Keyward agent",
		Description:      "Escrows this computer's BitLocker recovery passwords with the Keyward server.",
		StartType:        mgr.StartAutomatic,
		DelayedAutoStart: true,
		ErrorControl:     mgr.ErrorNormal,
		SidType:          windows.SERVICE_SID_TYPE_UNRESTRICTED,
	}, args...)
	if err != nil {
		return "", fmt.Errorf("install: %w", err)
	}
	defer s.Close()
	actions := []mgr.RecoveryAction{
		{Type: mgr.ServiceRestart, Delay: time.Minute},
		{Type: mgr.ServiceRestart, Delay: 5 * time.Minute},
		{Type: mgr.ServiceRestart, Delay: 30 * time.Minute},
	}
	if err := s.SetRecoveryActions(actions, uint32((24 * time.Hour).Seconds())); err != nil {
		return "", fmt.Errorf("install: setting the recovery actions: %w", err)
	}
	if err := s.SetRecoveryActionsOnNonCrashFailures(true); err != nil {
		return "", fmt.Errorf("install: setting the recovery actions: %w", err)
	}
	if err := eventlog.InstallAsEventCreate(eventSource, eventlog.Error|eventlog.Warning|eventlog.Info); err != nil && !strings.Contains(err.Error(), "exists") {
		return "", fmt.Errorf("install: registering the event log source: %w", err)
	}
	if err := s.Start(); err != nil {
		return "", fmt.Errorf("install: starting the service: %w", err)
	}
	return exe, nil
}

// installBinary creates dir for SYSTEM and Administrators only (agent.MakeAdminOnlyDir: every
// command of the agent needs an administrator anyway), and copies src into it: to a temporary
// file, flushed, then renamed over exe.
func installBinary(src, dir, exe string) error {
	if err := agent.MakeAdminOnlyDir(dir); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(dir, "keyward-agent.*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	from, err := windows.UTF16PtrFromString(tmp.Name())
	if err != nil {
		return err
	}
	to, err := windows.UTF16PtrFromString(exe)
	if err != nil {
		return err
	}
	return windows.MoveFileEx(from, to, windows.MOVEFILE_REPLACE_EXISTING|windows.MOVEFILE_WRITE_THROUGH)
}

// programFiles is the Program Files folder of the machine's own architecture.
func programFiles() string {
	if p, err := windows.KnownFolderPath(windows.FOLDERID_ProgramFiles, 0); err == nil && p != "" {
		return p
	}
	if p := os.Getenv("ProgramFiles"); p != "" {
		return p
	}
	return `C:\Program Files`
}

// eventSource is the Application event log source of the agent, registered by install and by
// the MSI.
const eventSource = "Keyward"

// withEventLog sends the logger's warnings and errors to the Application event log too, where
// fleet monitoring collects them; the log file keeps everything. Without the source (not
// installed) the logger is returned as it is.
func withEventLog(log *slog.Logger) *slog.Logger {
	el, err := eventlog.Open(eventSource)
	if err != nil {
		return log
	}
	return slog.New(&eventLogHandler{Handler: log.Handler(), el: el})
}

// eventLogHandler passes every record on and writes warnings and errors to the event log, with
// the record's attributes as key=value text (the agent's log lines never hold key material).
type eventLogHandler struct {
	slog.Handler
	el    *eventlog.Log
	attrs []slog.Attr
}

func (h *eventLogHandler) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Level < slog.LevelWarn {
		return err
	}
	var b strings.Builder
	b.WriteString(r.Message)
	write := func(a slog.Attr) bool {
		b.WriteString(" " + a.Key + "=" + a.Value.String())
		return true
	}
	for _, a := range h.attrs {
		write(a)
	}
	r.Attrs(write)
	if r.Level >= slog.LevelError {
		_ = h.el.Error(1, b.String())
	} else {
		_ = h.el.Warning(2, b.String())
	}
	return err
}

func (h *eventLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &eventLogHandler{Handler: h.Handler.WithAttrs(as), el: h.el, attrs: append(slices.Clone(h.attrs), as...)}
}

func (h *eventLogHandler) WithGroup(name string) slog.Handler {
	return &eventLogHandler{Handler: h.Handler.WithGroup(name), el: h.el, attrs: h.attrs}
}

// enrollmentKey is where the MSI leaves what enrollment needs (its SERVER_URL, ENROLL_TOKEN_FILE,
// ENROLL_TOKEN and OWNER properties), for the service's first start.
const enrollmentKey = `SOFTWARE\Keyward\Agent`

// readPendingEnrollment reads the MSI's enrollment values.
func readPendingEnrollment() (pendingEnrollment, bool) {
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, enrollmentKey, registry.QUERY_VALUE)
	if err != nil {
		return pendingEnrollment{}, false
	}
	defer k.Close()
	get := func(name string) string { v, _, _ := k.GetStringValue(name); return strings.TrimSpace(v) }
	p := pendingEnrollment{Server: get("ServerUrl"), Token: get("EnrollToken"), TokenFile: get("EnrollTokenFile"), Owner: get("Owner"), CAFile: get("CAFile")}
	return p, p.Server != ""
}

// clearPendingToken deletes the enrollment token the MSI left in the registry, once used.
func clearPendingToken() error {
	k, err := registry.OpenKey(registry.LOCAL_MACHINE, enrollmentKey, registry.SET_VALUE)
	if err != nil {
		return err
	}
	defer k.Close()
	if err := k.DeleteValue("EnrollToken"); err != nil && !errors.Is(err, registry.ErrNotExist) {
		return err
	}
	return nil
}

// uninstallService stops the service, waits for it to stop, deletes it and its event log
// source.
func uninstallService() error {
	m, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("uninstall: connecting to the service manager (run as administrator): %w", err)
	}
	defer m.Disconnect()
	s, err := m.OpenService(serviceName)
	if err != nil {
		return errors.New("uninstall: the keyward-agent service is not installed")
	}
	defer s.Close()
	if st, err := s.Control(svc.Stop); err == nil {
		for deadline := time.Now().Add(30 * time.Second); st.State != svc.Stopped && time.Now().Before(deadline); {
			time.Sleep(300 * time.Millisecond)
			if st, err = s.Query(); err != nil {
				break
			}
		}
	}
	if err := s.Delete(); err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	_ = eventlog.Remove(eventSource) // absent when the MSI owns it, or never registered
	return nil
}
