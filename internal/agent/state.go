package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// stateFile is the name of the state file in the state directory.
const stateFile = "state.json"

// stateVersion is the format of the state file; a file of a newer format is refused rather
// than misread.
const stateVersion = 1

// State is everything the agent keeps between runs. It never holds key material: recovery
// passwords and keys are read from BitLocker each time they are needed. The device token and
// the verification key are the device's own secrets (they cannot disclose any key), kept here
// because the agent needs them to talk to the server; the file is readable by SYSTEM and
// administrators only.
type State struct {
	Version         int       `json:"version"`
	ServerURL       string    `json:"serverUrl"`
	CAFile          string    `json:"caFile,omitempty"`
	DeviceID        string    `json:"deviceId"`
	DeviceToken     string    `json:"deviceToken"`
	VerificationKey string    `json:"verificationKey"` // standard base64, as the server gave it
	EnrolledAt      time.Time `json:"enrolledAt"`
	// Acknowledged are the key IDs whose material the server has acknowledged (2xx to the
	// escrow), sorted. IDs no longer on any volume are dropped.
	Acknowledged []string `json:"acknowledged"`
	// Rotation is the rotation under way, recorded before each step so that a crash at any
	// point resumes where it stopped.
	Rotation *RotationStep `json:"rotation,omitempty"`
	// Activating is the volume whose Device Encryption the agent is activating, recorded before
	// the first change, so that after a crash it goes on with a volume that no longer looks
	// like one waiting for activation (it has a recovery password, maybe the TPM protector)
	// and never mistakes a volume someone suspended for one.
	Activating string `json:"activating,omitempty"`
	// Done are the last commands carried out, so that a command the server lists again (its
	// answer to the result was lost) is answered again rather than carried out twice.
	Done []DoneCommand `json:"done,omitempty"`
	// LastReportAt is when the server last accepted a report, and Volumes what it said.
	LastReportAt time.Time       `json:"lastReportAt,omitzero"`
	Volumes      []VolumeSummary `json:"volumes,omitempty"`
	// EventBookmarks are, per event log, Windows' bookmark after the last event a report the
	// server accepted covered.
	EventBookmarks map[string]string `json:"eventBookmarks,omitempty"`
	// RecoverySeenUntil is the time of the last recovery unlock reported by an agent that read
	// the logs by time; it only bounds the first read of a log without a bookmark.
	RecoverySeenUntil time.Time `json:"recoverySeenUntil,omitzero"`
	// TokenRefusedAt is when the server last refused the device token (401), zero after.
	TokenRefusedAt time.Time `json:"tokenRefusedAt,omitzero"`
}

// Rotation phases, in order. The phase says what to do next; it is written to the state file
// before the step is taken.
const (
	phaseAdd    = "add"    // add a new recovery-password protector
	phaseEscrow = "escrow" // escrow the new protector and wait for the acknowledgement
	phaseRemove = "remove" // remove the old recovery-password protectors
	phaseReport = "report" // post the result
)

// RotationStep is a rotation in progress.
type RotationStep struct {
	CommandID  string `json:"commandId"`
	VolumeID   string `json:"volumeId"`
	MountPoint string `json:"mountPoint"`
	OldKeyID   string `json:"oldKeyId,omitempty"`
	Phase      string `json:"phase"`
	// Before lists the volume's protectors before the add: after a crash during the add, a
	// recovery password not among them is the one this rotation added.
	Before   []string `json:"before,omitempty"`
	NewKeyID string   `json:"newKeyId,omitempty"`
	// Failure is set when the rotation failed; the report phase then posts it.
	Failure string `json:"failure,omitempty"`
}

// DoneCommand is a command whose result the server accepted.
type DoneCommand struct {
	ID       string `json:"id"`
	Status   string `json:"status"`
	NewKeyID string `json:"newKeyId,omitempty"`
	Message  string `json:"message,omitempty"`
}

// maxDone bounds the remembered commands; the server lists a command again only until it has
// the result, so a few are plenty.
const maxDone = 32

// VolumeSummary is a volume as last reported, for `keyward-agent status` and to notice change.
type VolumeSummary struct {
	VolumeID         string             `json:"volumeId"`
	MountPoint       string             `json:"mountPoint"`
	VolumeType       string             `json:"volumeType"`
	ProtectionStatus string             `json:"protectionStatus"`
	EncryptionStatus string             `json:"encryptionStatus"`
	LockStatus       string             `json:"lockStatus,omitempty"`
	Protectors       []ProtectorSummary `json:"protectors"`
}

// ProtectorSummary is a key protector as last reported.
type ProtectorSummary struct {
	KeyID string `json:"keyId"`
	Type  string `json:"type"`
}

func (s *State) acknowledged(keyID string) bool {
	_, ok := slices.BinarySearch(s.Acknowledged, keyID)
	return ok
}

func (s *State) acknowledge(keyID string) {
	if i, ok := slices.BinarySearch(s.Acknowledged, keyID); !ok {
		s.Acknowledged = slices.Insert(s.Acknowledged, i, keyID)
	}
}

func (s *State) done(id string) (DoneCommand, bool) {
	for _, d := range s.Done {
		if d.ID == id {
			return d, true
		}
	}
	return DoneCommand{}, false
}

func (s *State) addDone(d DoneCommand) {
	s.Done = append(s.Done, d)
	if len(s.Done) > maxDone {
		s.Done = slices.Delete(s.Done, 0, len(s.Done)-maxDone)
	}
}

// ErrNotEnrolled is returned when the state directory holds no enrollment.
var ErrNotEnrolled = errors.New("this device is not enrolled: run keyward-agent enroll --server URL --token T")

// readState reads the state file of dir.
func readState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotEnrolled
	}
	if err != nil {
		return nil, fmt.Errorf("reading the state file: %w", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		// The file is written atomically, so a damaged one was changed by hand or by the disk.
		return nil, fmt.Errorf("the state file %s is damaged; enroll again with --force", filepath.Join(dir, stateFile))
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("the state file has format %d, this agent reads format %d", st.Version, stateVersion)
	}
	if st.DeviceID == "" || st.DeviceToken == "" || st.ServerURL == "" {
		return nil, ErrNotEnrolled
	}
	if st.DeviceToken, err = unprotectSecret(st.DeviceToken); err != nil {
		return nil, fmt.Errorf("reading the device token of the state file: %w", err)
	}
	if st.VerificationKey, err = unprotectSecret(st.VerificationKey); err != nil {
		return nil, fmt.Errorf("reading the verification key of the state file: %w", err)
	}
	return &st, nil
}

// writeState replaces the state file atomically and durably: the new content goes to a
// temporary file in the same directory, which is flushed to disk and then renamed over the old
// file, and the rename itself is flushed. A crash at any moment leaves the old state or the new
// one, never a mix, and once writeState returns the new state survives a power cut. The device
// token and verification key are sealed with protectSecret (DPAPI on Windows).
func writeState(dir string, st *State) error {
	st.Version = stateVersion
	c := *st
	var err error
	if c.DeviceToken, err = protectSecret(st.DeviceToken); err != nil {
		return fmt.Errorf("writing the state file: protecting the device token: %w", err)
	}
	if c.VerificationKey, err = protectSecret(st.VerificationKey); err != nil {
		return fmt.Errorf("writing the state file: protecting the verification key: %w", err)
	}
	b, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(dir, stateFile, b); err != nil {
		return fmt.Errorf("writing the state file: %w", err)
	}
	return nil
}

// dirInfo is what prepareStateDir needs to know about a state directory that already exists.
type dirInfo struct {
	Reparse      bool   // a symbolic link, junction or other reparse point
	Owner        string // for messages: the owner's SID or user ID
	OwnerTrusted bool   // owned by Administrators or SYSTEM (Windows), by this user or root (Unix)
}

// dirOps is the operating system's part of preparing the state directory: osDirOps, or a test's.
type dirOps interface {
	// Create makes the directory (its parent exists) with its final owner and access list in
	// one call, so that nobody can open it in between; fs.ErrExist when it exists.
	Create(dir string) error
	// Inspect describes an existing directory without following a reparse point.
	Inspect(dir string) (dirInfo, error)
	// Secure sets the owner and access list of an existing, trusted directory again.
	Secure(dir string) error
}

// prepareStateDir creates the state directory, owned by Administrators and open to SYSTEM and
// Administrators only (see osDirOps), or checks one that exists. A directory that exists with
// another owner, or that is a reparse point, is refused: a standard user may create folders in
// %ProgramData%, and one who made C:\ProgramData\Keyward before the install would keep the
// right to change its access list, then point state.json's serverUrl and caFile at a server of
// theirs and receive every recovery password.
func prepareStateDir(dir string) error { return prepareStateDirWith(osDirOps{}, dir) }

// PrepareStateDir creates or checks the state directory as the agent does before using it; the
// service calls it before it opens its log file there.
func PrepareStateDir(dir string) error { return prepareStateDir(dir) }

func prepareStateDirWith(ops dirOps, dir string) error {
	if dir == "" {
		return errors.New("no state directory given")
	}
	dir = filepath.Clean(dir)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("creating the state directory's parent: %w", err)
	}
	err := ops.Create(dir)
	if err == nil {
		return nil
	}
	if !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating the state directory: %w", err)
	}
	info, err := ops.Inspect(dir)
	switch {
	case err != nil:
		return fmt.Errorf("checking the state directory: %w", err)
	case info.Reparse:
		return fmt.Errorf("the state directory %s is a link or junction (a reparse point); refusing it: remove it and enroll again", dir)
	case !info.OwnerTrusted:
		return fmt.Errorf("the state directory %s exists and is owned by %s, not by Administrators or SYSTEM; refusing it: someone else may have created it to read or change the agent's state. Remove it and enroll again", dir, info.Owner)
	}
	if err := ops.Secure(dir); err != nil {
		return fmt.Errorf("restricting access to the state directory: %w", err)
	}
	return nil
}

// writeFileAtomic writes a file of the state directory the way writeState does.
func writeFileAtomic(dir, name string, b []byte) error {
	tmp, err := os.CreateTemp(dir, name+".*.tmp") // created with mode 0600
	if err != nil {
		return err
	}
	tname := tmp.Name()
	defer os.Remove(tname) // after a successful rename there is nothing left to remove
	if _, err := tmp.Write(b); err != nil {
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
	return replaceFile(tname, filepath.Join(dir, name))
}

// caFileName is the copy of the enrollment's CA file in the state directory: the service reads
// it there, where only administrators can change it, rather than at a path a user may control.
const caFileName = "ca.pem"

// lockWait is how long lockStateDir waits for a lock held elsewhere. A lock is briefly held
// after its owner let go while a child process started at that moment has not yet closed the
// inherited descriptor; a second agent still running holds it much longer and is refused.
const lockWait = time.Second

// lockStateDir takes the state directory's lock (lockDir), waiting up to lockWait for it.
func lockStateDir(dir string) (*os.File, error) {
	deadline := time.Now().Add(lockWait)
	for {
		f, err := lockDir(dir)
		if !errors.Is(err, ErrLocked) || time.Now().After(deadline) {
			return f, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dpapiPrefix marks a secret of the state file sealed with DPAPI (base64 after it).
const dpapiPrefix = "dpapi:"
