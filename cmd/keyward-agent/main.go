// Command keyward-agent is the Keyward agent for Windows: it escrows the device's BitLocker
// recovery passwords with a Keyward server, proves at every report that they are still the
// ones on the volumes, rotates them when the server asks, and can turn BitLocker on for the
// system drive once its recovery password is escrowed. It runs as a Windows service
// (keyward-agent install) or in the foreground (keyward-agent run).
//
// This package only wires flags, logging and the Windows service to internal/agent.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/keyward/keyward/internal/agent"
)

// version is set at build time: go build -ldflags "-X main.version=1.2.3".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(Run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

const usage = `keyward-agent: escrows this device's BitLocker recovery passwords with a Keyward server

Usage:
  keyward-agent enroll --server URL (--token-file F | --token T) [--owner UPN] [--ca-file F] [--force]
  keyward-agent run [--activate-device-encryption=true] [--encrypt-os-volume] [--ca-file F]
                    [--report-interval 90m] [--poll-interval 5m]
  keyward-agent install [the flags of run]    copy the agent to Program Files, install and start the service
  keyward-agent uninstall [--purge]           stop and remove the service (--purge: and the state directory)
  keyward-agent status                        what the agent knows (no secrets)
  keyward-agent version

Every command takes --state-dir (default %s) and --log-level (debug, info, warn,
error). Every flag can also be given as an environment variable: --server as
KEYWARD_AGENT_SERVER, --state-dir as KEYWARD_AGENT_STATE_DIR, and so on. Give the enrollment
token in a file (--token-file) or as KEYWARD_AGENT_TOKEN rather than on the command line, where
other processes and deployment tools' logs see it.
`

// Exit codes.
const (
	exitOK      = 0
	exitError   = 1
	exitUsage   = 2
	exitRevoked = 3 // the server refused the device token
)

// env is the process's outside world, injected so that tests run commands in-process.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

// Run runs one command and returns the process exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	e := env{stdout: stdout, stderr: stderr, getenv: getenv}
	if len(args) == 0 {
		fmt.Fprintf(stderr, usage, defaultStateDir())
		return exitUsage
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "enroll":
		err = enroll(ctx, rest, e)
	case "run":
		err = run(ctx, rest, e)
	case "install":
		err = install(rest, e)
	case "uninstall":
		err = uninstall(rest, e)
	case "status":
		err = status(rest, e)
	case "version":
		fmt.Fprintln(stdout, "keyward-agent", version)
	case "help", "-h", "--help":
		fmt.Fprintf(stdout, usage, defaultStateDir())
	default:
		err = usageError{fmt.Sprintf("unknown command %q", cmd)}
	}
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "keyward-agent: %s\n\n", ue.msg)
		fmt.Fprintf(stderr, usage, defaultStateDir())
		return exitUsage
	case errors.Is(err, agent.ErrRevoked):
		fmt.Fprintln(stderr, "keyward-agent:", agent.ErrRevoked)
		return exitRevoked
	}
	fmt.Fprintln(stderr, "keyward-agent:", err)
	return exitError
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// common are the flags every command has.
type common struct {
	stateDir string
	logLevel string
}

func newFlags(name string) (*flag.FlagSet, *common) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c := &common{}
	fs.StringVar(&c.stateDir, "state-dir", defaultStateDir(), "the directory of the agent's state")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	return fs, c
}

// parse reads the arguments, then fills every flag not given on the command line from its
// KEYWARD_AGENT_* environment variable (--state-dir from KEYWARD_AGENT_STATE_DIR).
func parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if err := fs.Parse(args); err != nil {
		return usageError{fmt.Sprintf("%s: %v", fs.Name(), err)}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		name := envName(f.Name)
		if v := getenv(name); v != "" {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = usageError{fmt.Sprintf("%s: %s: %v", fs.Name(), name, serr)}
			}
		}
	})
	return err
}

func envName(flagName string) string {
	return "KEYWARD_AGENT_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func (c *common) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, usageError{"--log-level must be debug, info, warn or error"}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), nil
}

func enroll(ctx context.Context, args []string, e env) error {
	fs, c := newFlags("enroll")
	server := fs.String("server", "", "the Keyward server, https://…")
	token := fs.String("token", "", "an enrollment token (kwe_…); prefer --token-file")
	tokenFile := fs.String("token-file", "", "a file holding the enrollment token")
	owner := fs.String("owner", "", "the user the device belongs to, as user@example.com")
	caFile := fs.String("ca-file", "", "PEM certificates of a private CA that signed the server's certificate")
	force := fs.Bool("force", false, "enroll again, replacing this device's enrollment")
	if err := parse(fs, args, e.getenv); err != nil {
		return err
	}
	if *tokenFile != "" {
		if *token != "" {
			return usageError{"enroll: give --token or --token-file, not both"}
		}
		t, err := readTokenFile(*tokenFile)
		if err != nil {
			return err
		}
		*token = t
	}
	if *server == "" || *token == "" {
		return usageError{"enroll: --server and --token (or --token-file) are required"}
	}
	if *caFile != "" {
		abs, err := filepath.Abs(*caFile)
		if err != nil {
			return err
		}
		*caFile = abs
	}
	id, err := agent.Enroll(ctx, agent.EnrollOptions{StateDir: c.stateDir, ServerURL: *server, Token: *token, OwnerUPN: *owner,
		CAFile: *caFile, Force: *force, Info: deviceInfo(ctx), Version: version})
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, id)
	return nil
}

// readTokenFile reads an enrollment token from a file: its first line, trimmed (a BOM and a
// final newline left by an editor or by PowerShell's Out-File are not part of it).
func readTokenFile(name string) (string, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return "", fmt.Errorf("reading the enrollment token file: %w", err)
	}
	defer clear(b)
	line, _, _ := strings.Cut(strings.TrimPrefix(string(b), "\uFEFF"), "\n")
	if t := strings.TrimSpace(line); t != "" {
		return t, nil
	}
	return "", fmt.Errorf("the enrollment token file %s is empty", name)
}

// runFlags are the flags of run, which install records for the service.
type runFlags struct {
	common
	caFile          string
	activateDE      bool
	encryptOSVolume bool
	reportInterval  time.Duration
	pollInterval    time.Duration
}

func parseRun(name string, args []string, e env) (*runFlags, error) {
	fs, c := newFlags(name)
	f := &runFlags{}
	fs.StringVar(&f.caFile, "ca-file", "", "PEM certificates of a private CA (default: the one given at enrollment)")
	fs.BoolVar(&f.activateDE, "activate-device-encryption", true, "finish Device Encryption waiting for activation: escrow a recovery password, then add the TPM protector and turn protection on")
	fs.BoolVar(&f.encryptOSVolume, "encrypt-os-volume", false, "turn BitLocker on for the system drive, once its recovery password is escrowed")
	fs.DurationVar(&f.reportInterval, "report-interval", agent.DefaultReportInterval, "time between periodic reports (spread by ±10%)")
	fs.DurationVar(&f.pollInterval, "poll-interval", agent.DefaultPollInterval, "how often to look for changes and commands")
	if err := parse(fs, args, e.getenv); err != nil {
		return nil, err
	}
	if f.reportInterval < time.Minute || f.pollInterval < 10*time.Second {
		return nil, usageError{name + ": --report-interval must be at least 1m and --poll-interval at least 10s"}
	}
	if f.caFile != "" {
		abs, err := filepath.Abs(f.caFile)
		if err != nil {
			return nil, err
		}
		f.caFile = abs
	}
	f.common = *c
	return f, nil
}

// serviceArgs are the arguments the service is installed with: run and the flags given.
func (f *runFlags) serviceArgs() ([]string, error) {
	dir, err := filepath.Abs(f.stateDir)
	if err != nil {
		return nil, err
	}
	args := []string{"run", "--state-dir", dir, "--log-level", f.logLevel,
		"--report-interval", f.reportInterval.String(), "--poll-interval", f.pollInterval.String()}
	if f.caFile != "" {
		args = append(args, "--ca-file", f.caFile)
	}
	args = append(args, "--activate-device-encryption="+strconv.FormatBool(f.activateDE))
	if f.encryptOSVolume {
		args = append(args, "--encrypt-os-volume")
	}
	return args, nil
}

// newBitLocker returns the system's BitLocker; tests replace it with the simulator.
var newBitLocker = systemBitLocker

func run(ctx context.Context, args []string, e env) error {
	f, err := parseRun("run", args, e)
	if err != nil {
		return err
	}
	if isWindowsService() {
		return runService(func(ctx context.Context) error { return runAgent(ctx, f, nil) })
	}
	return runAgent(ctx, f, e.stderr)
}

// runAgent runs the agent until ctx ends. Logs go to logTo, or, when nil (the service has no
// console), to agent.log in the state directory.
func runAgent(ctx context.Context, f *runFlags, logTo io.Writer) (err error) {
	service := logTo == nil
	if service {
		// The directory is made (or checked) with its owner and access list before the log
		// file goes into it.
		if err := agent.PrepareStateDir(f.stateDir); err != nil {
			return err
		}
		lf, err := openLogFile(f.stateDir)
		if err != nil {
			return err
		}
		defer lf.Close()
		logTo = lf
	}
	log, err := f.logger(logTo)
	if err != nil {
		return err
	}
	log = withEventLog(log)
	if service {
		// A service has no console for the error Run prints: it goes to the log.
		defer func() {
			if err != nil {
				log.Error("the agent stopped", "error", err.Error())
			}
		}()
	}
	bl, err := newBitLocker()
	if err != nil {
		return err
	}
	if err := enrollPending(ctx, f.stateDir, log); err != nil {
		return err
	}
	a, err := agent.New(agent.Config{StateDir: f.stateDir, BitLocker: bl, Logger: log, Version: version, CAFile: f.caFile,
		ActivateDeviceEncryption: f.activateDE, EncryptOSVolume: f.encryptOSVolume, Edition: windowsEdition(), ReportInterval: f.reportInterval, PollInterval: f.pollInterval})
	if err != nil {
		return err
	}
	defer a.Close()
	err = a.Run(ctx)
	log.Info("agent stopped")
	return err
}

// maxLogSize is the size at which agent.log is moved to agent.log.1 when the agent starts.
const maxLogSize = 10 << 20

// openLogFile opens agent.log in the state directory for appending, keeping one older file.
func openLogFile(stateDir string) (*os.File, error) {
	name := filepath.Join(stateDir, "agent.log")
	if fi, err := os.Stat(name); err == nil && fi.Size() > maxLogSize {
		if err := os.Rename(name, name+".1"); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, err
	}
	return os.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
}

func install(args []string, e env) error {
	f, err := parseRun("install", args, e)
	if err != nil {
		return err
	}
	if !servicesSupported {
		return fmt.Errorf("install: %w", errNotWindows)
	}
	if _, err := agent.ReadStatus(f.stateDir); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	svcArgs, err := f.serviceArgs()
	if err != nil {
		return err
	}
	exe, err := installService(svcArgs)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, "the keyward-agent service is installed from", exe, "and started; it logs to", filepath.Join(svcArgs[2], "agent.log"), "and warnings also to the Application event log (source Keyward)")
	return nil
}

func uninstall(args []string, e env) error {
	fs, c := newFlags("uninstall")
	purge := fs.Bool("purge", false, "also delete the state directory: the device token, the CA file and the logs")
	if err := parse(fs, args, e.getenv); err != nil {
		return err
	}
	if !servicesSupported {
		return fmt.Errorf("uninstall: %w", errNotWindows)
	}
	if err := uninstallService(); err != nil {
		return err
	}
	if !*purge {
		fmt.Fprintln(e.stdout, "the keyward-agent service is removed; the state directory is kept (uninstall --purge deletes it)")
		return nil
	}
	if err := purgeStateDir(c.stateDir); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, "the keyward-agent service and its state directory are removed; the server keeps the device and its keys")
	return nil
}

// purgeStateDir deletes the state directory. It refuses a directory that holds no agent state:
// a mistyped --state-dir must not delete something else.
func purgeStateDir(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "state.json")); err != nil {
		if _, lerr := os.Stat(filepath.Join(dir, "agent.lock")); lerr != nil {
			return fmt.Errorf("uninstall --purge: %s holds no agent state; not deleting it", dir)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("uninstall --purge: %w", err)
	}
	return nil
}

func status(args []string, e env) error {
	fs, c := newFlags("status")
	if err := parse(fs, args, e.getenv); err != nil {
		return err
	}
	st, err := agent.ReadStatus(c.stateDir)
	if err != nil {
		return err
	}
	return st.Write(e.stdout)
}

// pendingEnrollment is what an installer left for the service's first start: the MSI's
// SERVER_URL, ENROLL_TOKEN_FILE or ENROLL_TOKEN, and OWNER. A token in a file is read from it; a
// token given directly is deleted once the device is enrolled.
type pendingEnrollment struct {
	Server, Token, TokenFile, Owner, CAFile string
}

// pendingEnrollments and clearToken are the platform's (the registry on Windows); tests replace
// them.
var (
	pendingEnrollments = readPendingEnrollment
	clearToken         = clearPendingToken
)

// enrollPending enrolls the device with what the installer left, if it is not enrolled yet.
// An enrollment the server refuses stops the service with the reason in the log and the event
// log; the service manager starts it again later.
func enrollPending(ctx context.Context, stateDir string, log *slog.Logger) error {
	p, ok := pendingEnrollments()
	if !ok {
		return nil
	}
	if _, err := agent.ReadStatus(stateDir); !errors.Is(err, agent.ErrNotEnrolled) {
		if err == nil && p.Token != "" {
			if err := clearToken(); err != nil {
				log.Warn("deleting the installer's enrollment token failed", "error", err.Error())
			}
		}
		return nil // enrolled (or a state directory to look at by hand)
	}
	token := p.Token
	if p.TokenFile != "" {
		t, err := readTokenFile(p.TokenFile)
		if err != nil {
			return err
		}
		token = t
	}
	if token == "" {
		return errors.New("the installer left a server but no enrollment token (ENROLL_TOKEN_FILE or ENROLL_TOKEN)")
	}
	id, err := agent.Enroll(ctx, agent.EnrollOptions{StateDir: stateDir, ServerURL: p.Server, Token: token, OwnerUPN: p.Owner,
		CAFile: p.CAFile, Info: deviceInfo(ctx), Version: version})
	if err != nil {
		return fmt.Errorf("enrolling with the installer's settings: %w", err)
	}
	log.Info("enrolled with the installer's settings", "deviceId", id, "server", p.Server)
	if p.Token != "" {
		if err := clearToken(); err != nil {
			log.Warn("deleting the installer's enrollment token failed", "error", err.Error())
		}
	}
	return nil
}

// errNotWindows is what the Windows-only commands say elsewhere.
var errNotWindows = errors.New("this works on Windows only: the agent manages BitLocker, which only Windows has")
