// Package bitlockersim is a BitLocker that lives in memory, at the level Windows offers it: the
// Win32_EncryptableVolume methods of bitlocker.WMI and the event log of bitlocker.EventLog,
// with Windows' numbers and ReturnValues. The agent runs on it through bitlocker.System, the
// same code that runs on Windows, so every test of the agent also tests the mapping of
// Windows' answers.
//
// It keeps volumes with key protectors and their material, injects failures (a ReturnValue or
// any error) and crashes before or after any method, keeps an ordered log of every operation
// (into which a test can write what else happened, such as the server acknowledging a key), and
// runs a hook after each operation so a test can check an invariant at every step.
//
// It behaves like Windows where the agent depends on it: new protectors get fresh GUIDs and
// Windows-generated recovery passwords; DeleteKeyProtector refuses the last protector of a
// protected volume (FVE_E_KEY_REQUIRED) and an auto-unlock key (FVE_E_VOLUME_BOUND_ALREADY); a
// locked volume gives out no material (FVE_E_LOCKED_VOLUME); Device Encryption's "waiting for
// activation" is a fully encrypted volume with protection off and no protector, which
// EnableKeyProtectors turns on; Encrypt refuses flags that conflict with the policy
// (E_INVALIDARG); ProtectKeyWithTPM fails without a ready TPM.
package bitlockersim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/keyward/keyward/internal/agent/bitlocker"
)

// Method names a method of bitlocker.WMI or bitlocker.EventLog.
type Method string

// The methods.
const (
	EncryptableVolumes               Method = "EncryptableVolumes"
	GetConversionStatus              Method = "GetConversionStatus"
	GetProtectionStatus              Method = "GetProtectionStatus"
	GetLockStatus                    Method = "GetLockStatus"
	GetKeyProtectors                 Method = "GetKeyProtectors"
	GetKeyProtectorType              Method = "GetKeyProtectorType"
	GetKeyProtectorNumericalPassword Method = "GetKeyProtectorNumericalPassword"
	GetKeyProtectorExternalKey       Method = "GetKeyProtectorExternalKey"
	ProtectKeyWithNumericalPassword  Method = "ProtectKeyWithNumericalPassword"
	ProtectKeyWithTPM                Method = "ProtectKeyWithTPM"
	DeleteKeyProtector               Method = "DeleteKeyProtector"
	EnableKeyProtectors              Method = "EnableKeyProtectors"
	Encrypt                          Method = "Encrypt"
	TPMReady                         Method = "TPMReady"
	Events                           Method = "Events"
)

// changes are the methods that change a volume; a fault with no Method counts only these.
var changes = []Method{ProtectKeyWithNumericalPassword, ProtectKeyWithTPM, DeleteKeyProtector, EnableKeyProtectors, Encrypt}

// Changes reports whether the method changes a volume (and so is counted by a fault with no
// Method).
func (m Method) Changes() bool { return slices.Contains(changes, m) }

// When is whether a fault strikes before a call takes effect or after.
type When int

// The moments of a fault.
const (
	Before When = iota
	After
)

func (w When) String() string {
	if w == After {
		return "after"
	}
	return "before"
}

// Crash is the value the simulator panics with at a crash point: it stands for the agent's
// process dying there, with no chance to clean up. A test recovers it, throws the agent away and
// starts a new one on the same state directory and the same simulator.
type Crash struct {
	Method Method
	When   When
}

func (c Crash) String() string { return fmt.Sprintf("crash %s %s", c.When, c.Method) }

// Fault is a failure injected into a future call.
type Fault struct {
	// Method is the method the fault strikes; empty for any method that changes a volume
	// (reads that crash are the same as a crash before the next change).
	Method Method
	// Call is which call of Method, counted from when the fault is injected, it strikes: 1 for
	// the next one.
	Call int
	When When
	// Crash makes the call panic with a Crash value. Otherwise the call fails with Code as its
	// ReturnValue or, when Code is 0, with Err (a failure to reach WMI). A failure after the
	// call means the change was made and the caller was told it failed.
	Crash bool
	Code  bitlocker.HRESULT
	Err   error
	// Ignore makes the call return success without taking effect, as a method that reports
	// success wrongly would.
	Ignore bool
}

// Op is one entry of the simulator's log.
type Op struct {
	Seq        int
	Method     Method // empty for a note
	MountPoint string
	KeyID      string // the protector acted on or read, or added (canonical)
	Err        error  // what the call returned; nil on success
	Note       string // a note written by the test
}

func (o Op) String() string {
	if o.Method == "" {
		return fmt.Sprintf("%d note %s", o.Seq, o.Note)
	}
	s := fmt.Sprintf("%d %s %s %s", o.Seq, o.Method, o.MountPoint, o.KeyID)
	if o.Err != nil {
		s += " error: " + o.Err.Error()
	}
	return s
}

// ProtectorSpec is a key protector with its material.
type ProtectorSpec struct {
	KeyID       string // canonical; generated when empty
	Type        bitlocker.ProtectorType
	Password    string    // recovery password, for RecoveryPassword protectors
	ExternalKey *[32]byte // the key, for an ExternalKey protector whose key can be read
	// AutoUnlock marks an external key that unlocks the volume automatically: Windows refuses
	// to delete it.
	AutoUnlock bool
}

// VolumeSpec is a volume to create.
type VolumeSpec struct {
	ID               string // generated as \\?\Volume{GUID}\ when empty
	MountPoint       string
	Type             bitlocker.VolumeType
	ProtectionStatus bitlocker.ProtectionStatus
	EncryptionStatus bitlocker.EncryptionStatus
	Locked           bool
	// ProtectorsHidden makes GetKeyProtectors fail with FVE_E_LOCKED_VOLUME while the volume is
	// locked (some drives give their protector list while locked, some do not).
	ProtectorsHidden bool
	Protectors       []ProtectorSpec
}

type fault struct {
	Fault
	remaining int
}

type logEvent struct {
	provider string
	record   int
	event    bitlocker.LogEvent
}

// Sim is the simulated BitLocker. It is safe for concurrent use.
type Sim struct {
	mu       sync.Mutex
	vols     []*VolumeSpec
	log      []Op
	faults   []*fault
	events   map[string][]logEvent
	records  int
	rnd      *rand.Rand
	ever     []string // every recovery password a protector ever had
	afterOp  func(Op)
	tpmReady bool
	policy   bitlocker.EncryptionPolicy
}

// New returns an empty simulator with a ready TPM whose generated GUIDs and passwords follow
// from seed.
func New(seed uint64) *Sim {
	return &Sim{rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), events: map[string][]logEvent{}, tpmReady: true}
}

var (
	_ bitlocker.WMI      = (*Sim)(nil)
	_ bitlocker.EventLog = (*Sim)(nil)
)

// System returns the agent's BitLocker on the simulator, with its policy.
func (s *Sim) System() *bitlocker.System {
	return &bitlocker.System{WMI: s, Events: s, Policy: s.Policy}
}

// AfterEach sets a function called after every operation (and note), outside the simulator's
// lock, so it may inspect the simulator. A test checks its invariant there.
func (s *Sim) AfterEach(f func(Op)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.afterOp = f
}

// SetTPMReady sets what TPMReady answers; without a ready TPM, ProtectKeyWithTPM fails with
// TBS_E_SERVICE_NOT_RUNNING.
func (s *Sim) SetTPMReady(ready bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tpmReady = ready
}

// SetPolicy sets the Group Policy Encrypt enforces and Policy returns.
func (s *Sim) SetPolicy(p bitlocker.EncryptionPolicy) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.policy = p
}

// Policy returns the policy set with SetPolicy.
func (s *Sim) Policy() bitlocker.EncryptionPolicy {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.policy
}

// AddVolume creates a volume and returns its ID.
func (s *Sim) AddVolume(v VolumeSpec) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v.ID == "" {
		v.ID = `\\?\Volume{` + strings.ToLower(s.guid()) + `}\`
	}
	v.Protectors = slices.Clone(v.Protectors)
	for i := range v.Protectors {
		p := &v.Protectors[i]
		if p.KeyID == "" {
			p.KeyID = s.guid()
		}
		if p.Password != "" {
			s.ever = append(s.ever, p.Password)
		}
	}
	s.vols = append(s.vols, &v)
	return v.ID
}

// Inject arms a fault.
func (s *Sim) Inject(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Call < 1 {
		f.Call = 1
	}
	s.faults = append(s.faults, &fault{Fault: f, remaining: f.Call})
}

// ClearFaults disarms every fault not yet struck.
func (s *Sim) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// AddEvent writes an event into a log, after every event written so far, whatever its time:
// as Windows does when the clock was wrong at the time.
func (s *Sim) AddEvent(log, provider string, e bitlocker.LogEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records++
	e.Data = slices.Clone(e.Data)
	s.events[log] = append(s.events[log], logEvent{provider: provider, record: s.records, event: e})
}

// AddRecoveryUnlock writes the event Windows writes for an unlock with a recovery password or
// key: 24652 and 24654 into the System log, 782 and 805 into the BitLocker Management log, with
// the protector IDs braced in the data as Windows has them.
func (s *Sim) AddRecoveryUnlock(u bitlocker.RecoveryUnlock) {
	data := []string{`\\?\Volume{00000000-0000-0000-0000-000000000000}`, "C:", "", ""}
	for _, g := range u.GUIDs {
		data = append(data, "{"+g+"}")
	}
	e := bitlocker.LogEvent{ID: u.EventID, Time: u.Time, Data: data}
	if u.EventID == bitlocker.EventVolumeUnlocked || u.EventID == bitlocker.EventUnlockedInWinRE {
		s.AddEvent(bitlocker.LogManagement, "Microsoft-Windows-BitLocker-API", e)
		return
	}
	s.AddEvent(bitlocker.LogSystem, "Microsoft-Windows-BitLocker-Driver", e)
}

// SetStatus changes a volume's statuses, as Windows does when encryption finishes or a user
// suspends protection.
func (s *Sim) SetStatus(mountPoint string, p bitlocker.ProtectionStatus, e bitlocker.EncryptionStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.volume(mountPoint); v != nil {
		v.ProtectionStatus, v.EncryptionStatus = p, e
	}
}

// SetLocked locks or unlocks a volume, as a user does with a data drive.
func (s *Sim) SetLocked(mountPoint string, locked bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.volume(mountPoint); v != nil {
		v.Locked = locked
	}
}

// AddProtectorByHand adds a protector the way an administrator at the machine would, outside
// the agent; no operation is logged.
func (s *Sim) AddProtectorByHand(mountPoint string, p ProtectorSpec) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.volume(mountPoint)
	if p.KeyID == "" {
		p.KeyID = s.guid()
	}
	if p.Password != "" {
		s.ever = append(s.ever, p.Password)
	}
	v.Protectors = append(v.Protectors, p)
	return p.KeyID
}

// Note writes a line into the log, between the operations it happened between.
func (s *Sim) Note(format string, args ...any) {
	s.mu.Lock()
	op := Op{Seq: len(s.log) + 1, Note: fmt.Sprintf(format, args...)}
	s.log = append(s.log, op)
	hook := s.afterOp
	s.mu.Unlock()
	if hook != nil {
		hook(op)
	}
}

// Log returns every operation and note so far, in order.
func (s *Sim) Log() []Op {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.log)
}

// Snapshot returns the volumes with their protectors' material.
func (s *Sim) Snapshot() []VolumeSpec {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]VolumeSpec, 0, len(s.vols))
	for _, v := range s.vols {
		c := *v
		c.Protectors = slices.Clone(v.Protectors)
		out = append(out, c)
	}
	return out
}

// Passwords returns every recovery password any protector has ever had, including those of
// protectors since removed.
func (s *Sim) Passwords() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ever)
}

// CheckEscrowed checks the invariant the agent must keep (SPEC §4): every encrypted volume
// has at least one recovery-password protector whose password the server holds, as held
// tells. A volume with protection off and no protector but recovery passwords is left out:
// that is Device Encryption waiting for activation, whose key is in the clear on the disk
// until a TPM protector is added and protection comes on, which the agent does only after the
// escrow.
func (s *Sim) CheckEscrowed(held func(keyID, password string) bool) error {
	for _, v := range s.Snapshot() {
		vol := bitlocker.Volume{ProtectionStatus: v.ProtectionStatus, EncryptionStatus: v.EncryptionStatus, Locked: v.Locked}
		clearKey := v.ProtectionStatus == bitlocker.ProtectionOff && !slices.ContainsFunc(v.Protectors, func(p ProtectorSpec) bool { return p.Type != bitlocker.RecoveryPassword })
		if !vol.Encrypted() || clearKey {
			continue
		}
		ok := false
		for _, p := range v.Protectors {
			ok = ok || p.Type == bitlocker.RecoveryPassword && held(p.KeyID, p.Password)
		}
		if !ok {
			return fmt.Errorf("encrypted volume %s has no recovery password the server holds", v.MountPoint)
		}
	}
	return nil
}

// call runs one operation: it strikes any fault due, runs do (under the lock) unless a fault
// struck before, logs the result and calls the hook. do returns a key ID to log (canonical or
// braced) and the ReturnValue or error.
func (s *Sim) call(method Method, deviceID, keyID string, do func() (string, error)) error {
	s.mu.Lock()
	mountPoint := deviceID
	if v := s.byID(deviceID); v != nil {
		mountPoint = v.MountPoint
	}
	var due *fault
	for i, f := range s.faults {
		if f.Method != method && (f.Method != "" || !slices.Contains(changes, method)) {
			continue
		}
		if f.remaining--; f.remaining == 0 {
			due = f
			s.faults = slices.Delete(s.faults, i, i+1)
			break
		}
	}
	logID := func(id string) string {
		if c, err := bitlocker.CanonicalKeyID(id); err == nil {
			return c
		}
		return id
	}
	keyID = logID(keyID)
	fail := func(f *fault) error {
		if f.Code != 0 {
			return bitlocker.ReturnValue(string(method), uint32(f.Code))
		}
		return f.Err
	}
	var err error
	if due != nil && due.When == Before {
		if due.Crash {
			s.finish(Op{Method: method, MountPoint: mountPoint, KeyID: keyID, Err: errors.New(Crash{method, Before}.String())})
			panic(Crash{method, Before})
		}
		err = fail(due)
	} else if due != nil && due.Ignore {
		err = nil
	} else {
		var id string
		id, err = do()
		if id != "" {
			keyID = logID(id)
		}
		if due != nil && err == nil {
			if due.Crash {
				s.finish(Op{Method: method, MountPoint: mountPoint, KeyID: keyID})
				panic(Crash{method, After})
			}
			err = fail(due)
		}
	}
	s.finish(Op{Method: method, MountPoint: mountPoint, KeyID: keyID, Err: err})
	return err
}

// finish logs an operation with the lock held, then releases it and calls the hook.
func (s *Sim) finish(op Op) {
	op.Seq = len(s.log) + 1
	s.log = append(s.log, op)
	hook := s.afterOp
	s.mu.Unlock()
	if hook != nil {
		hook(op)
	}
}

func (s *Sim) guid() string {
	var b [16]byte
	for i := range b {
		b[i] = byte(s.rnd.Uint32())
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%X-%X-%X-%X-%X", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func (s *Sim) volume(mountPoint string) *VolumeSpec {
	for _, v := range s.vols {
		if v.MountPoint == mountPoint {
			return v
		}
	}
	return nil
}

func (s *Sim) byID(deviceID string) *VolumeSpec {
	for _, v := range s.vols {
		if v.ID == deviceID {
			return v
		}
	}
	return nil
}

// rv is a ReturnValue of method.
func rv(method Method, code bitlocker.HRESULT) error {
	return bitlocker.ReturnValue(string(method), uint32(code))
}

// errNoInstance is what calling a method on an instance that is gone gives: WMI's "not found".
var errNoInstance = errors.New("WBEM_E_NOT_FOUND: no such Win32_EncryptableVolume instance")

// lookup finds a volume and, when keyID is not empty, its protector (index -1 when absent).
func (s *Sim) lookup(deviceID, keyID string) (*VolumeSpec, int, error) {
	v := s.byID(deviceID)
	if v == nil {
		return nil, -1, errNoInstance
	}
	if keyID == "" {
		return v, -1, nil
	}
	id, err := bitlocker.CanonicalKeyID(keyID)
	if err != nil || !strings.HasPrefix(keyID, "{") {
		return v, -1, nil
	}
	for i, p := range v.Protectors {
		if p.KeyID == id {
			return v, i, nil
		}
	}
	return v, -1, nil
}

// EncryptableVolumes implements bitlocker.WMI.
func (s *Sim) EncryptableVolumes(ctx context.Context) ([]bitlocker.EncryptableVolume, error) {
	var out []bitlocker.EncryptableVolume
	err := s.call(EncryptableVolumes, "", "", func() (string, error) {
		out = nil
		for _, v := range s.vols {
			t := uint32(bitlocker.VolumeTypeFixedData)
			switch v.Type {
			case bitlocker.OperatingSystem:
				t = bitlocker.VolumeTypeOperatingSystem
			case bitlocker.Removable:
				t = bitlocker.VolumeTypeRemovable
			}
			ev := bitlocker.EncryptableVolume{DeviceID: v.ID, VolumeType: t}
			if len(v.MountPoint) == 2 && v.MountPoint[1] == ':' {
				ev.DriveLetter = v.MountPoint
			}
			out = append(out, ev)
		}
		return "", ctx.Err()
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// GetConversionStatus implements bitlocker.WMI.
func (s *Sim) GetConversionStatus(ctx context.Context, deviceID string) (uint32, error) {
	var c uint32
	err := s.call(GetConversionStatus, deviceID, "", func() (string, error) {
		v, _, err := s.lookup(deviceID, "")
		if err != nil {
			return "", err
		}
		if v.Locked {
			return "", rv(GetConversionStatus, bitlocker.FVE_E_LOCKED_VOLUME)
		}
		switch v.EncryptionStatus {
		case bitlocker.FullyDecrypted:
			c = bitlocker.ConversionFullyDecrypted
		case bitlocker.FullyEncrypted:
			c = bitlocker.ConversionFullyEncrypted
		case bitlocker.EncryptionInProgress:
			c = bitlocker.ConversionEncryptionInProgress
		case bitlocker.DecryptionInProgress:
			c = bitlocker.ConversionDecryptionInProgress
		case bitlocker.EncryptionPaused:
			c = bitlocker.ConversionEncryptionPaused
		case bitlocker.DecryptionPaused:
			c = bitlocker.ConversionDecryptionPaused
		}
		return "", ctx.Err()
	})
	return c, err
}

// GetProtectionStatus implements bitlocker.WMI: unknown for a locked volume.
func (s *Sim) GetProtectionStatus(ctx context.Context, deviceID string) (uint32, error) {
	var p uint32
	err := s.call(GetProtectionStatus, deviceID, "", func() (string, error) {
		v, _, err := s.lookup(deviceID, "")
		if err != nil {
			return "", err
		}
		switch {
		case v.Locked:
			p = bitlocker.ProtectionStatusUnknown
		case v.ProtectionStatus == bitlocker.ProtectionOn:
			p = bitlocker.ProtectionStatusOn
		}
		return "", ctx.Err()
	})
	return p, err
}

// GetLockStatus implements bitlocker.WMI.
func (s *Sim) GetLockStatus(ctx context.Context, deviceID string) (uint32, error) {
	var l uint32
	err := s.call(GetLockStatus, deviceID, "", func() (string, error) {
		v, _, err := s.lookup(deviceID, "")
		if err != nil {
			return "", err
		}
		if v.Locked {
			l = bitlocker.LockStatusLocked
		}
		return "", ctx.Err()
	})
	return l, err
}

// GetKeyProtectors implements bitlocker.WMI.
func (s *Sim) GetKeyProtectors(ctx context.Context, deviceID string) ([]string, error) {
	var ids []string
	err := s.call(GetKeyProtectors, deviceID, "", func() (string, error) {
		v, _, err := s.lookup(deviceID, "")
		if err != nil {
			return "", err
		}
		if v.Locked && v.ProtectorsHidden {
			return "", rv(GetKeyProtectors, bitlocker.FVE_E_LOCKED_VOLUME)
		}
		ids = nil
		for _, p := range v.Protectors {
			ids = append(ids, "{"+p.KeyID+"}")
		}
		return "", ctx.Err()
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

var protectorTypes = map[bitlocker.ProtectorType]uint32{
	bitlocker.TPM: bitlocker.KeyProtectorTPM, bitlocker.ExternalKey: bitlocker.KeyProtectorExternalKey,
	bitlocker.RecoveryPassword: bitlocker.KeyProtectorNumericalPassword, bitlocker.TPMPin: bitlocker.KeyProtectorTPMPin,
	bitlocker.TPMStartupKey: bitlocker.KeyProtectorTPMStartupKey, bitlocker.TPMPinStartupKey: bitlocker.KeyProtectorTPMPinStartupKey,
	bitlocker.PublicKey: bitlocker.KeyProtectorPublicKey, bitlocker.Password: bitlocker.KeyProtectorPassphrase,
}

// GetKeyProtectorType implements bitlocker.WMI: E_INVALIDARG for an ID the volume does not have.
func (s *Sim) GetKeyProtectorType(ctx context.Context, deviceID, keyID string) (uint32, error) {
	var t uint32
	err := s.call(GetKeyProtectorType, deviceID, keyID, func() (string, error) {
		v, i, err := s.lookup(deviceID, keyID)
		switch {
		case err != nil:
			return "", err
		case i < 0:
			return "", rv(GetKeyProtectorType, bitlocker.E_INVALIDARG)
		}
		t = protectorTypes[v.Protectors[i].Type]
		return "", ctx.Err()
	})
	return t, err
}

// GetKeyProtectorNumericalPassword implements bitlocker.WMI.
func (s *Sim) GetKeyProtectorNumericalPassword(ctx context.Context, deviceID, keyID string) (string, error) {
	var pw string
	err := s.call(GetKeyProtectorNumericalPassword, deviceID, keyID, func() (string, error) {
		v, i, err := s.lookup(deviceID, keyID)
		switch {
		case err != nil:
			return "", err
		case i < 0:
			return "", rv(GetKeyProtectorNumericalPassword, bitlocker.E_INVALIDARG)
		case v.Locked:
			return "", rv(GetKeyProtectorNumericalPassword, bitlocker.FVE_E_LOCKED_VOLUME)
		case v.Protectors[i].Type != bitlocker.RecoveryPassword:
			return "", rv(GetKeyProtectorNumericalPassword, bitlocker.FVE_E_INVALID_PROTECTOR_TYPE)
		}
		pw = v.Protectors[i].Password
		return "", ctx.Err()
	})
	if err != nil {
		return "", err
	}
	return pw, nil
}

// GetKeyProtectorExternalKey implements bitlocker.WMI. An external key given without its key
// stands for a system that does not give it out (FIPS mode).
func (s *Sim) GetKeyProtectorExternalKey(ctx context.Context, deviceID, keyID string) ([]byte, error) {
	var key []byte
	err := s.call(GetKeyProtectorExternalKey, deviceID, keyID, func() (string, error) {
		v, i, err := s.lookup(deviceID, keyID)
		switch {
		case err != nil:
			return "", err
		case i < 0:
			return "", rv(GetKeyProtectorExternalKey, bitlocker.E_INVALIDARG)
		case v.Locked:
			return "", rv(GetKeyProtectorExternalKey, bitlocker.FVE_E_LOCKED_VOLUME)
		case v.Protectors[i].Type != bitlocker.ExternalKey:
			return "", rv(GetKeyProtectorExternalKey, bitlocker.FVE_E_INVALID_PROTECTOR_TYPE)
		case v.Protectors[i].ExternalKey == nil:
			return "", rv(GetKeyProtectorExternalKey, bitlocker.FVE_E_FIPS_PREVENTS_EXTERNAL_KEY_EXPORT)
		}
		key = slices.Clone(v.Protectors[i].ExternalKey[:])
		return "", ctx.Err()
	})
	return key, err
}

// ProtectKeyWithNumericalPassword implements bitlocker.WMI: Windows generates the password.
func (s *Sim) ProtectKeyWithNumericalPassword(ctx context.Context, deviceID string) (string, error) {
	var id string
	err := s.call(ProtectKeyWithNumericalPassword, deviceID, "", func() (string, error) {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		v, _, err := s.lookup(deviceID, "")
		if err != nil {
			return "", err
		}
		if v.Locked {
			return "", rv(ProtectKeyWithNumericalPassword, bitlocker.FVE_E_LOCKED_VOLUME)
		}
		pw, err := bitlocker.GeneratePassword(randReader{s.rnd})
		if err != nil {
			return "", err
		}
		id = s.guid()
		v.Protectors = append(v.Protectors, ProtectorSpec{KeyID: id, Type: bitlocker.RecoveryPassword, Password: pw})
		s.ever = append(s.ever, pw)
		return id, nil
	})
	if err != nil {
		return "", err
	}
	return "{" + id + "}", nil
}

// ProtectKeyWithTPM implements bitlocker.WMI.
func (s *Sim) ProtectKeyWithTPM(ctx context.Context, deviceID string) (string, error) {
	var id string
	err := s.call(ProtectKeyWithTPM, deviceID, "", func() (string, error) {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		v, _, err := s.lookup(deviceID, "")
		switch {
		case err != nil:
			return "", err
		case v.Locked:
			return "", rv(ProtectKeyWithTPM, bitlocker.FVE_E_LOCKED_VOLUME)
		case v.Type != bitlocker.OperatingSystem:
			return "", rv(ProtectKeyWithTPM, bitlocker.FVE_E_NOT_OS_VOLUME)
		case !s.tpmReady:
			return "", rv(ProtectKeyWithTPM, bitlocker.TBS_E_SERVICE_NOT_RUNNING)
		case slices.ContainsFunc(v.Protectors, func(p ProtectorSpec) bool { return p.Type == bitlocker.TPM }):
			return "", rv(ProtectKeyWithTPM, bitlocker.FVE_E_PROTECTOR_EXISTS)
		}
		id = s.guid()
		v.Protectors = append(v.Protectors, ProtectorSpec{KeyID: id, Type: bitlocker.TPM})
		return id, nil
	})
	if err != nil {
		return "", err
	}
	return "{" + id + "}", nil
}

// DeleteKeyProtector implements bitlocker.WMI. Like Windows it refuses the last protector of a
// volume whose protection is on, and an external key that unlocks the volume automatically.
func (s *Sim) DeleteKeyProtector(ctx context.Context, deviceID, keyID string) error {
	return s.call(DeleteKeyProtector, deviceID, keyID, func() (string, error) {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		v, i, err := s.lookup(deviceID, keyID)
		switch {
		case err != nil:
			return "", err
		case v.Locked:
			return "", rv(DeleteKeyProtector, bitlocker.FVE_E_LOCKED_VOLUME)
		case i < 0:
			return "", rv(DeleteKeyProtector, bitlocker.E_INVALIDARG)
		case v.Protectors[i].AutoUnlock:
			return "", rv(DeleteKeyProtector, bitlocker.FVE_E_VOLUME_BOUND_ALREADY)
		case len(v.Protectors) == 1 && v.ProtectionStatus == bitlocker.ProtectionOn:
			return "", rv(DeleteKeyProtector, bitlocker.FVE_E_KEY_REQUIRED)
		}
		v.Protectors = slices.Delete(v.Protectors, i, i+1)
		if len(v.Protectors) == 0 {
			v.ProtectionStatus = bitlocker.ProtectionOff // the volume falls back to a clear key
		}
		return "", nil
	})
}

// EnableKeyProtectors implements bitlocker.WMI: protection comes on for an encrypted volume with
// a protector (the clear key of Device Encryption is dropped).
func (s *Sim) EnableKeyProtectors(ctx context.Context, deviceID string) error {
	return s.call(EnableKeyProtectors, deviceID, "", func() (string, error) {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		v, _, err := s.lookup(deviceID, "")
		switch {
		case err != nil:
			return "", err
		case v.Locked:
			return "", rv(EnableKeyProtectors, bitlocker.FVE_E_LOCKED_VOLUME)
		case v.EncryptionStatus == bitlocker.FullyDecrypted:
			return "", rv(EnableKeyProtectors, bitlocker.FVE_E_NOT_ENCRYPTED)
		case len(v.Protectors) == 0:
			return "", rv(EnableKeyProtectors, bitlocker.FVE_E_CANNOT_ENCRYPT_NO_KEY)
		}
		v.ProtectionStatus = bitlocker.ProtectionOn
		return "", nil
	})
}

// Encrypt implements bitlocker.WMI: the volume starts encrypting (protection comes on when
// Windows finishes; see SetStatus). Flags or a method other than the policy's are E_INVALIDARG.
func (s *Sim) Encrypt(ctx context.Context, deviceID string, method, flags uint32) error {
	return s.call(Encrypt, deviceID, "", func() (string, error) {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		v, _, err := s.lookup(deviceID, "")
		dataOnly := flags&bitlocker.EncryptDataOnly != 0
		switch {
		case err != nil:
			return "", err
		case v.EncryptionStatus != bitlocker.FullyDecrypted:
			return "", rv(Encrypt, bitlocker.FVE_E_NOT_DECRYPTED)
		case len(v.Protectors) == 0:
			return "", rv(Encrypt, bitlocker.FVE_E_CANNOT_ENCRYPT_NO_KEY)
		case s.policy.OSEncryptionType == 1 && dataOnly, s.policy.OSEncryptionType == 2 && !dataOnly,
			s.policy.EncryptionMethod != 0 && method != s.policy.EncryptionMethod:
			return "", rv(Encrypt, bitlocker.E_INVALIDARG)
		}
		v.EncryptionStatus = bitlocker.EncryptionInProgress
		return "", nil
	})
}

// TPMReady implements bitlocker.WMI.
func (s *Sim) TPMReady(ctx context.Context) (bool, error) {
	var ready bool
	err := s.call(TPMReady, "", "", func() (string, error) {
		ready = s.tpmReady
		return "", ctx.Err()
	})
	return ready, err
}

// Events implements bitlocker.EventLog. Its bookmarks have the form of Windows' and hold the
// record number of the last event read; as on Windows, reading nothing leaves the bookmark as
// it was.
func (s *Sim) Events(ctx context.Context, log, provider string, ids []int, bookmark string) ([]bitlocker.LogEvent, string, error) {
	var out []bitlocker.LogEvent
	next := bookmark
	err := s.call(Events, log, "", func() (string, error) {
		after := 0
		if bookmark != "" {
			_, rest, ok := strings.Cut(bookmark, "RecordId='")
			n, err := strconv.Atoi(strings.SplitN(rest, "'", 2)[0])
			if !ok || err != nil || !strings.Contains(bookmark, "Channel='"+log+"'") {
				return "", errors.New("EvtCreateBookmark: ERROR_INVALID_PARAMETER")
			}
			after = n
		}
		out = nil
		last := after
		for _, e := range s.events[log] {
			if e.record <= after {
				continue
			}
			last = e.record
			if (provider == "" || e.provider == provider) && slices.Contains(ids, e.event.ID) {
				ev := e.event
				ev.Data = slices.Clone(ev.Data)
				out = append(out, ev)
			}
		}
		if last != after {
			next = fmt.Sprintf("<BookmarkList><Bookmark Channel='%s' RecordId='%d' IsCurrent='true'/></BookmarkList>", log, last)
		}
		return "", ctx.Err()
	})
	if err != nil {
		return nil, bookmark, err
	}
	return out, next, nil
}

// randReader reads from the simulator's generator (under its lock).
type randReader struct{ r *rand.Rand }

func (r randReader) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(r.r.Uint32())
	}
	return len(b), nil
}
