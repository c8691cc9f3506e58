//go:build windows

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/windows/registry"
	"golang.org/x/sys/windows/svc"
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

// installService creates the service (automatic, delayed start, as LocalSystem, which BitLocker
// management needs), sets it to restart after failures, and starts it.
func installService(args []string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	m, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("install: connecting to the service manager (run as administrator): %w", err)
	}
	defer m.Disconnect()
	if s, err := m.OpenService(serviceName); err == nil {
		s.Close()
		return errors.New("install: the keyward-agent service is already installed; uninstall it first")
	}
	s, err := m.CreateService(serviceName, exe, mgr.Config{
		DisplayName:      "Keyward agent",
		Description:      "Escrows this computer's BitLocker recovery passwords with the Keyward server.",
		StartType:        mgr.StartAutomatic,
		DelayedAutoStart: true,
	}, args...)
	if err != nil {
		return fmt.Errorf("install: %w", err)
	}
	defer s.Close()
	actions := []mgr.RecoveryAction{
		{Type: mgr.ServiceRestart, Delay: time.Minute},
		{Type: mgr.ServiceRestart, Delay: 5 * time.Minute},
		{Type: mgr.ServiceRestart, Delay: 30 * time.Minute},
	}
	if err := s.SetRecoveryActions(actions, uint32((24 * time.Hour).Seconds())); err != nil {
		return fmt.Errorf("install: setting the recovery actions: %w", err)
	}
	if err := s.SetRecoveryActionsOnNonCrashFailures(true); err != nil {
		return fmt.Errorf("install: setting the recovery actions: %w", err)
	}
	if err := s.Start(); err != nil {
		return fmt.Errorf("install: starting the service: %w", err)
	}
	return nil
}

// uninstallService stops the service, waits for it to stop, and deletes it.
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
	return nil
}
