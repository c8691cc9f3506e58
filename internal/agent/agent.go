// Package agent is the Keyward device agent: it escrows the recovery passwords (and readable
// recovery keys) of a Windows device's BitLocker volumes with the server, proves at every
// report that the escrowed passwords are still the ones on the volumes, rotates them when the
// server asks, and, if told to, turns BitLocker on for the operating-system volume only once
// its recovery password is escrowed.
//
// It talks to the server only through the JSON of package wire over HTTPS, and to BitLocker only
// through bitlocker.BitLocker; it shares no code with the server.
//
// The rule everything here serves (SPEC §4): an encrypted volume always has a recovery password
// the server holds. A new recovery password is escrowed and acknowledged before any old one is
// removed and before encryption starts, and every step of a rotation is recorded in the state
// file before it is taken, so that a crash at any point resumes safely.
//
// Key material is read from BitLocker when needed and held only for the request that sends it;
// it is never logged, never in an error, and never in the state file.
package agent

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/keyward/keyward/internal/agent/bitlocker"
	"github.com/keyward/keyward/internal/agent/wire"
)

// Defaults of Config.
const (
	DefaultReportInterval = 90 * time.Minute
	DefaultPollInterval   = 5 * time.Minute
	// reportJitter spreads periodic reports by ±10%.
	reportJitter = 0.1
)

// Config is what an agent needs. StateDir and BitLocker are required; the rest has defaults.
type Config struct {
	StateDir  string
	BitLocker bitlocker.BitLocker
	Logger    *slog.Logger // default: discard
	Version   string       // sent as User-Agent keyward-agent/Version
	// CAFile, when set, replaces the CA file recorded at enrollment.
	CAFile string
	// EncryptOSVolume turns BitLocker on for the operating-system volume when it is fully
	// decrypted: a recovery password is added and escrowed first.
	EncryptOSVolume bool
	// ActivateDeviceEncryption finishes Device Encryption on an operating-system volume waiting
	// for activation: a recovery password is added and escrowed, then the TPM protector added
	// and protection turned on.
	ActivateDeviceEncryption bool
	// Edition is Windows' EditionID (Professional, Enterprise, Core for Home, ...), empty when
	// unknown; on Home the agent does not try to turn BitLocker on.
	Edition string
	// ReportInterval is the time between periodic reports, spread by ±10%.
	ReportInterval time.Duration
	// PollInterval is how often the agent looks at the volumes and asks for commands between
	// reports; a change it sees is reported at once.
	PollInterval time.Duration
	Backoff      Backoff
	// Transport replaces the HTTP transport (tests wrap the real one to inject faults).
	Transport http.RoundTripper
	// Now, Sleep and Rand are the clock and the randomness (new recovery passwords, jitter).
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	Rand  io.Reader
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.ReportInterval <= 0 {
		c.ReportInterval = DefaultReportInterval
	}
	if c.PollInterval <= 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.Backoff == (Backoff{}) {
		c.Backoff = DefaultBackoff
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Sleep == nil {
		c.Sleep = sleep
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Agent is one running agent. It owns its state directory (locked) until Close. Its methods
// are called from one goroutine.
type Agent struct {
	cfg    Config
	bl     bitlocker.BitLocker
	log    *slog.Logger
	st     *State
	vk     []byte // the decoded verification key
	client *client
	lock   *os.File

	reported   bool      // a report was accepted since start
	nextReport time.Time // when the next periodic report is due
	changed    bool      // something changed since the last accepted report
	events     []wire.Event
	// refused are key IDs the server refused (400, 409) or whose material could not be read:
	// not tried again until the next periodic report, so a refusal is no hot loop.
	refused map[string]bool
	// encryptionHeld and activationHeld stop attempts to turn BitLocker on or to activate
	// Device Encryption until the next periodic report.
	encryptionHeld, activationHeld bool
	// bookmarks are the event log positions after the recovery unlocks put into events,
	// recorded in the state once the report carrying them is accepted.
	bookmarks map[string]string
	// legacyReport is set once the server refused lockStatus: it predates the field, so locked
	// volumes are left out of reports as they were before it.
	legacyReport bool
}

// New opens the agent of an enrolled state directory.
func New(cfg Config) (*Agent, error) {
	cfg.setDefaults()
	if cfg.BitLocker == nil {
		return nil, errors.New("no BitLocker")
	}
	if err := prepareStateDir(cfg.StateDir); err != nil {
		return nil, err
	}
	lock, err := lockStateDir(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	a, err := open(cfg, lock)
	if err != nil {
		if lock != nil {
			lock.Close()
		}
		return nil, err
	}
	return a, nil
}

func open(cfg Config, lock *os.File) (*Agent, error) {
	st, err := readState(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	vk, err := base64.StdEncoding.DecodeString(st.VerificationKey)
	if err != nil || len(vk) < 16 {
		return nil, errors.New("the state file holds no valid verification key; enroll again with --force")
	}
	base, err := checkServerURL(st.ServerURL)
	if err != nil {
		return nil, err
	}
	caFile := st.CAFile
	if cfg.CAFile != "" {
		caFile = cfg.CAFile
	}
	hc, err := newHTTPClient(caFile, cfg.Transport)
	if err != nil {
		return nil, err
	}
	return &Agent{
		cfg: cfg, bl: cfg.BitLocker, log: cfg.Logger, st: st, vk: vk, lock: lock,
		client:  &client{base: base, token: st.DeviceToken, http: hc, userAgent: "keyward-agent/" + cfg.Version},
		refused: map[string]bool{},
	}, nil
}

// Close releases the state directory.
func (a *Agent) Close() error {
	clear(a.vk)
	if a.lock == nil {
		return nil
	}
	err := a.lock.Close()
	a.lock = nil
	return err
}

// DeviceID is the device's ID on the server.
func (a *Agent) DeviceID() string { return a.st.DeviceID }

// save writes the state file. Every change to the state is saved before the agent acts on it.
func (a *Agent) save() error { return writeState(a.cfg.StateDir, a.st) }

// Run runs the agent until ctx ends: a cycle at start, then one every poll interval, a report
// at start, every report interval and after any change. Work that fails for a reason that may
// pass is retried with backoff. Run returns nil when ctx ends, and ErrRevoked (wrapped) when the
// server refuses the device token: without a token the agent can do nothing.
func (a *Agent) Run(ctx context.Context) error {
	a.log.Info("agent started", "deviceId", a.st.DeviceID, "server", a.st.ServerURL)
	attempt := 0
	for {
		err := a.Cycle(ctx)
		var wait time.Duration
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrRevoked):
			a.log.Error("stopping: the server refused the device token; it does not know this device (the server was replaced or restored from a backup older than the enrollment). Enroll again: keyward-agent enroll --force --server URL --token T",
				"deviceId", a.st.DeviceID, "server", a.st.ServerURL)
			return err
		case err != nil:
			wait = a.cfg.Backoff.Delay(attempt, uniform(a.cfg.Rand))
			attempt++
			a.log.Warn("cycle failed; retrying", "error", err.Error(), "attempt", attempt, "retryIn", wait.String())
		default:
			attempt = 0
			wait = a.cfg.PollInterval
			if until := a.nextReport.Sub(a.cfg.Now()); until < wait {
				wait = max(until, 0)
			}
		}
		if err := a.cfg.Sleep(ctx, wait); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// Cycle does one round of the agent's work: finish a rotation under way, escrow what is not
// acknowledged, start encryption if told to, then report (when due or after a change) or fetch
// commands, and carry the commands out. An error means some of the work is left for the next
// cycle; everything done is recorded.
func (a *Agent) Cycle(ctx context.Context) error {
	now := a.cfg.Now()
	periodic := !a.reported || !now.Before(a.nextReport)
	if periodic {
		// Give refused keys and a failed encryption one more chance per report interval.
		clear(a.refused)
		a.encryptionHeld, a.activationHeld = false, false
	}
	if a.st.Rotation != nil {
		if err := a.resumeRotation(ctx); err != nil {
			return err
		}
	}
	vols, err := a.volumes(ctx)
	if err != nil {
		return err
	}
	if err := a.escrowAll(ctx, vols); err != nil {
		return err
	}
	if a.cfg.ActivateDeviceEncryption {
		if err := a.activateDeviceEncryption(ctx, vols); err != nil {
			return err
		}
	}
	if a.cfg.EncryptOSVolume {
		if err := a.encryptOSVolume(ctx, vols); err != nil {
			return err
		}
	}
	if a.changed {
		if vols, err = a.volumes(ctx); err != nil {
			return err
		}
	}
	a.collectRecoveryUnlocks(ctx, vols)

	var cmds []wire.Command
	if periodic || a.changed || len(a.events) > 0 || !sameVolumes(summarize(vols), a.st.Volumes) {
		cmds, err = a.report(ctx, vols)
	} else {
		cmds, err = a.client.commands(ctx)
	}
	if err != nil {
		return a.serverError(err)
	}
	// Commands change volumes, and each change is reported at once; the server's answer may hold
	// more commands. Three rounds are plenty: the server lists a command only until it has its
	// result.
	for range 3 {
		if len(cmds) == 0 {
			return nil
		}
		if err := a.runCommands(ctx, cmds); err != nil {
			return err
		}
		if !a.changed {
			return nil
		}
		if vols, err = a.volumes(ctx); err != nil {
			return err
		}
		if cmds, err = a.report(ctx, vols); err != nil {
			return a.serverError(err)
		}
	}
	return nil
}

// serverError records a refused device token and passes the error on.
func (a *Agent) serverError(err error) error {
	if errors.Is(err, ErrRevoked) {
		a.st.TokenRefusedAt = a.cfg.Now().UTC()
		if serr := a.save(); serr != nil {
			a.log.Error("saving the state failed", "error", serr.Error())
		}
	}
	return err
}

// volumes reads the volumes and forgets acknowledgements of protectors no longer on any.
func (a *Agent) volumes(ctx context.Context) ([]bitlocker.Volume, error) {
	vols, err := a.bl.Volumes(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the BitLocker volumes: %w", err)
	}
	present := map[string]bool{}
	for _, v := range vols {
		if v.ProtectorsUnreadable {
			// A locked volume that hides its protectors may hold any of them: forget nothing.
			return vols, nil
		}
		for _, p := range v.Protectors {
			present[p.KeyID] = true
		}
	}
	kept := a.st.Acknowledged[:0:0]
	for _, id := range a.st.Acknowledged {
		if present[id] {
			kept = append(kept, id)
		}
	}
	if len(kept) != len(a.st.Acknowledged) {
		a.st.Acknowledged = kept
		if err := a.save(); err != nil {
			return nil, err
		}
	}
	return vols, nil
}

// event queues an event for the next report. The message must hold no key material: it is
// built from the agent's own words and redacted errors.
func (a *Agent) event(typ string, v bitlocker.Volume, keyID, message string) {
	a.events = append(a.events, wire.Event{Type: typ, VolumeID: v.ID, KeyID: keyID,
		Message: truncate(bitlocker.Redact(message), 1000), Time: a.cfg.Now().UTC()})
	if len(a.events) > maxEvents {
		// The server is unreachable for long; the newest events say what is wrong now.
		a.events = a.events[len(a.events)-maxEvents:]
	}
}

// maxEvents bounds the events kept for a report the server does not take.
const maxEvents = 100

func findVolume(vols []bitlocker.Volume, id string) (bitlocker.Volume, bool) {
	for _, v := range vols {
		if v.ID == id {
			return v, true
		}
	}
	return bitlocker.Volume{}, false
}
