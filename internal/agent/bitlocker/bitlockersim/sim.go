// Package bitlockersim is a BitLocker that lives in memory, so that the agent can be tested on
// any platform: volumes with key protectors and their material, failures and crashes injected
// at any method, an ordered log of every operation (into which a test can write what else
// happened, such as the server acknowledging a key), and a hook that runs after each operation
// so a test can check an invariant at every step.
//
// It behaves like Windows where the agent depends on it: new protectors get fresh GUIDs,
// removing a protector that is not there fails with bitlocker.ErrNotFound, a locked volume
// gives out no material, and starting encryption on the operating-system volume adds a TPM
// protector.
package bitlockersim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/keyward/keyward/internal/agent/bitlocker"
)

// Method names a method of bitlocker.BitLocker.
type Method string

// The methods.
const (
	Volumes             Method = "Volumes"
	RecoveryPassword    Method = "RecoveryPassword"
	ExternalKey         Method = "ExternalKey"
	AddRecoveryPassword Method = "AddRecoveryPassword"
	RemoveProtector     Method = "RemoveProtector"
	EnableEncryption    Method = "EnableEncryption"
	RecoveryUnlocks     Method = "RecoveryUnlocks"
)

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
	Method Method // empty for any method
	// Call is which call of Method (of any method when Method is empty), counted from when the
	// fault is injected, it strikes: 1 for the next one.
	Call int
	When When
	// Crash makes the call panic with a Crash value; otherwise it returns Err. An error after
	// the call means the change was made and the caller was told it failed.
	Crash bool
	Err   error
}

// Op is one entry of the simulator's log.
type Op struct {
	Seq        int
	Method     Method // empty for a note
	MountPoint string
	KeyID      string // the protector acted on or read, or added
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
}

// VolumeSpec is a volume to create.
type VolumeSpec struct {
	ID               string // generated as \\?\Volume{GUID}\ when empty
	MountPoint       string
	Type             bitlocker.VolumeType
	ProtectionStatus bitlocker.ProtectionStatus
	EncryptionStatus bitlocker.EncryptionStatus
	Locked           bool
	Protectors       []ProtectorSpec
}

type fault struct {
	Fault
	remaining int
}

// Sim is the simulated BitLocker. It is safe for concurrent use.
type Sim struct {
	mu      sync.Mutex
	vols    []*VolumeSpec
	log     []Op
	faults  []*fault
	unlocks []bitlocker.RecoveryUnlock
	rnd     *rand.Rand
	ever    []string // every recovery password a protector ever had
	afterOp func(Op)
}

// New returns an empty simulator whose generated GUIDs follow from seed.
func New(seed uint64) *Sim {
	return &Sim{rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// AfterEach sets a function called after every operation (and note), outside the simulator's
// lock, so it may inspect the simulator. A test checks its invariant there.
func (s *Sim) AfterEach(f func(Op)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.afterOp = f
}

// AddVolume creates a volume and returns its ID.
func (s *Sim) AddVolume(v VolumeSpec) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v.ID == "" {
		v.ID = `\\?\Volume{` + s.guid() + `}\`
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

// AddRecoveryUnlock records that a volume was unlocked with a recovery password, as the Windows
// event log would.
func (s *Sim) AddRecoveryUnlock(u bitlocker.RecoveryUnlock) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unlocks = append(s.unlocks, u)
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

// CheckEscrowed checks the invariant the agent must keep (SPEC §4): every encrypted volume has
// at least one recovery-password protector whose password the server holds, as held tells.
func (s *Sim) CheckEscrowed(held func(keyID, password string) bool) error {
	for _, v := range s.Snapshot() {
		vol := bitlocker.Volume{ProtectionStatus: v.ProtectionStatus, EncryptionStatus: v.EncryptionStatus, Locked: v.Locked}
		if !vol.Encrypted() {
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
// struck before, logs the result and calls the hook.
func (s *Sim) call(method Method, mountPoint, keyID string, do func() (string, error)) error {
	s.mu.Lock()
	var due *fault
	for i, f := range s.faults {
		if f.Method != "" && f.Method != method {
			continue
		}
		if f.remaining--; f.remaining == 0 {
			due = f
			s.faults = slices.Delete(s.faults, i, i+1)
			break
		}
	}
	var err error
	if due != nil && due.When == Before {
		if due.Crash {
			s.finish(Op{Method: method, MountPoint: mountPoint, KeyID: keyID, Err: errors.New(Crash{method, Before}.String())})
			panic(Crash{method, Before})
		}
		err = due.Err
	} else {
		var id string
		id, err = do()
		if id != "" {
			keyID = id
		}
		if due != nil && err == nil {
			if due.Crash {
				s.finish(Op{Method: method, MountPoint: mountPoint, KeyID: keyID})
				panic(Crash{method, After})
			}
			err = due.Err
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

func (s *Sim) protector(mountPoint, keyID string) (*VolumeSpec, int, error) {
	v := s.volume(mountPoint)
	if v == nil {
		return nil, -1, fmt.Errorf("volume %s: %w", mountPoint, bitlocker.ErrNotFound)
	}
	for i, p := range v.Protectors {
		if p.KeyID == keyID {
			return v, i, nil
		}
	}
	return v, -1, fmt.Errorf("volume %s: protector %s: %w", mountPoint, keyID, bitlocker.ErrNotFound)
}

var _ bitlocker.BitLocker = (*Sim)(nil)

// Volumes implements bitlocker.BitLocker.
func (s *Sim) Volumes(ctx context.Context) ([]bitlocker.Volume, error) {
	var out []bitlocker.Volume
	err := s.call(Volumes, "", "", func() (string, error) {
		out = nil
		for _, v := range s.vols {
			vol := bitlocker.Volume{ID: v.ID, MountPoint: v.MountPoint, Type: v.Type,
				ProtectionStatus: v.ProtectionStatus, EncryptionStatus: v.EncryptionStatus}
			if v.Locked {
				vol.Locked, vol.ProtectionStatus, vol.EncryptionStatus = true, bitlocker.ProtectionUnknown, ""
			}
			for _, p := range v.Protectors {
				vol.Protectors = append(vol.Protectors, bitlocker.Protector{KeyID: p.KeyID, Type: p.Type})
			}
			out = append(out, vol)
		}
		return "", ctx.Err()
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// RecoveryPassword implements bitlocker.BitLocker.
func (s *Sim) RecoveryPassword(ctx context.Context, mountPoint, keyID string) (string, error) {
	var pw string
	err := s.call(RecoveryPassword, mountPoint, keyID, func() (string, error) {
		v, i, err := s.protector(mountPoint, keyID)
		switch {
		case err != nil:
			return "", err
		case v.Locked:
			return "", fmt.Errorf("volume %s is locked: %w", mountPoint, bitlocker.ErrNotReadable)
		case v.Protectors[i].Type != bitlocker.RecoveryPassword:
			return "", fmt.Errorf("protector %s is not a recovery password", keyID)
		}
		pw = v.Protectors[i].Password
		return "", ctx.Err()
	})
	if err != nil {
		return "", err
	}
	return pw, nil
}

// ExternalKey implements bitlocker.BitLocker.
func (s *Sim) ExternalKey(ctx context.Context, mountPoint, keyID string) ([32]byte, error) {
	var key [32]byte
	err := s.call(ExternalKey, mountPoint, keyID, func() (string, error) {
		v, i, err := s.protector(mountPoint, keyID)
		switch {
		case err != nil:
			return "", err
		case v.Protectors[i].Type != bitlocker.ExternalKey:
			return "", fmt.Errorf("protector %s is not an external key", keyID)
		case v.Locked || v.Protectors[i].ExternalKey == nil:
			return "", fmt.Errorf("protector %s: %w", keyID, bitlocker.ErrNotReadable)
		}
		key = *v.Protectors[i].ExternalKey
		return "", ctx.Err()
	})
	return key, err
}

// AddRecoveryPassword implements bitlocker.BitLocker.
func (s *Sim) AddRecoveryPassword(ctx context.Context, mountPoint, password string) (string, error) {
	var id string
	err := s.call(AddRecoveryPassword, mountPoint, "", func() (string, error) {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		v := s.volume(mountPoint)
		if v == nil {
			return "", fmt.Errorf("volume %s: %w", mountPoint, bitlocker.ErrNotFound)
		}
		if c, err := bitlocker.ParsePassword(password); err != nil || c != password {
			return "", errors.New("the recovery password is not valid")
		}
		if v.Locked {
			return "", fmt.Errorf("volume %s is locked", mountPoint)
		}
		id = s.guid()
		v.Protectors = append(v.Protectors, ProtectorSpec{KeyID: id, Type: bitlocker.RecoveryPassword, Password: password})
		s.ever = append(s.ever, password)
		return id, nil
	})
	if err != nil {
		return "", err
	}
	return id, nil
}

// RemoveProtector implements bitlocker.BitLocker. Like Windows it refuses to remove the last
// protector of an encrypted volume.
func (s *Sim) RemoveProtector(ctx context.Context, mountPoint, keyID string) error {
	return s.call(RemoveProtector, mountPoint, keyID, func() (string, error) {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		v, i, err := s.protector(mountPoint, keyID)
		if err != nil {
			return "", err
		}
		vol := bitlocker.Volume{ProtectionStatus: v.ProtectionStatus, EncryptionStatus: v.EncryptionStatus}
		if len(v.Protectors) == 1 && vol.Encrypted() {
			return "", errors.New("cannot remove the last key protector of an encrypted volume")
		}
		v.Protectors = slices.Delete(v.Protectors, i, i+1)
		return "", nil
	})
}

// EnableEncryption implements bitlocker.BitLocker: the volume starts encrypting (protection
// comes on when Windows finishes; see SetStatus), and the operating-system volume gets a TPM
// protector if it has none.
func (s *Sim) EnableEncryption(ctx context.Context, mountPoint string) error {
	return s.call(EnableEncryption, mountPoint, "", func() (string, error) {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		v := s.volume(mountPoint)
		if v == nil {
			return "", fmt.Errorf("volume %s: %w", mountPoint, bitlocker.ErrNotFound)
		}
		if len(v.Protectors) == 0 {
			return "", errors.New("no key protector: add one before encrypting")
		}
		if v.EncryptionStatus != bitlocker.FullyDecrypted {
			return "", fmt.Errorf("volume %s is %s, not fully decrypted", mountPoint, v.EncryptionStatus)
		}
		if v.Type == bitlocker.OperatingSystem && !slices.ContainsFunc(v.Protectors, func(p ProtectorSpec) bool { return p.Type == bitlocker.TPM }) {
			v.Protectors = append(v.Protectors, ProtectorSpec{KeyID: s.guid(), Type: bitlocker.TPM})
		}
		v.EncryptionStatus = bitlocker.EncryptionInProgress
		return "", nil
	})
}

// RecoveryUnlocks implements bitlocker.BitLocker.
func (s *Sim) RecoveryUnlocks(ctx context.Context, since time.Time) ([]bitlocker.RecoveryUnlock, error) {
	var out []bitlocker.RecoveryUnlock
	err := s.call(RecoveryUnlocks, "", "", func() (string, error) {
		out = nil
		for _, u := range s.unlocks {
			if u.Time.After(since) {
				u.GUIDs = slices.Clone(u.GUIDs)
				out = append(out, u)
			}
		}
		return "", ctx.Err()
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
