package escrow

import (
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// This file holds the inputs and outputs of the escrow services. The storage adapter
// implements the services; the HTTP and command-line adapters call them through interfaces of
// their own, built from these types.

// Enrollment is what a device tells the server when it enrolls.
type Enrollment struct {
	Hostname     string
	SerialNumber string
	OSVersion    string
	OwnerUPN     string
}

// Validate checks the fields. Errors: CodeInvalid naming the field.
func (en Enrollment) Validate() error {
	fields := []struct {
		name, value string
		required    bool
	}{
		{"hostname", en.Hostname, true},
		{"serialNumber", en.SerialNumber, false},
		{"osVersion", en.OSVersion, false},
		{"ownerUpn", en.OwnerUPN, false},
	}
	for _, f := range fields {
		if err := CheckText(f.name, f.value, f.required, 256); err != nil {
			return err
		}
	}
	if en.OwnerUPN == "" {
		return nil
	}
	owner, err := CanonicalName("ownerUpn", en.OwnerUPN)
	if err != nil {
		return err
	}
	if !strings.Contains(owner, "@") {
		return Errorf(CodeInvalid, "ownerUpn: must be a user principal name like alice@example.com")
	}
	return nil
}

// CanonicalOwner returns the enrollment's owner UPN in canonical form, "" for none. Errors: as
// Validate's for ownerUpn.
func (en Enrollment) CanonicalOwner() (string, error) {
	if en.OwnerUPN == "" {
		return "", nil
	}
	return CanonicalName("ownerUpn", en.OwnerUPN)
}

// Enrolled is what the device receives: its ID, its token (shown once) and the key it proves
// its escrowed passwords with.
type Enrolled struct {
	DeviceID        string
	DeviceToken     Token
	VerificationKey []byte
}

// CheckText validates a free-text field: no control characters, at most max bytes.
// Errors: CodeInvalid naming the field.
func CheckText(name, value string, required bool, max int) error {
	if required && strings.TrimSpace(value) == "" {
		return Errorf(CodeInvalid, "%s: required", name)
	}
	if len(value) > max {
		return Errorf(CodeInvalid, "%s: at most %d bytes", name, max)
	}
	// Text ends up in the hash-chained audit trail, whose encoding maps invalid UTF-8 to U+FFFD:
	// two different invalid strings would hash alike, so they are refused here.
	if !utf8.ValidString(value) {
		return Errorf(CodeInvalid, "%s: not valid UTF-8", name)
	}
	if strings.ContainsFunc(value, unicode.IsControl) {
		return Errorf(CodeInvalid, "%s: contains control characters", name)
	}
	// Format characters (category Cf: bidirectional overrides such as U+202E, zero-width
	// spaces and joiners, the byte-order mark) are invisible or reorder what follows them, so
	// "LT-0042" and a look-alike would render the same in the portal and the audit trail.
	if i := strings.IndexFunc(value, func(r rune) bool { return unicode.Is(unicode.Cf, r) }); i >= 0 {
		r, _ := utf8.DecodeRuneInString(value[i:])
		return Errorf(CodeInvalid, "%s: contains an invisible formatting character (U+%04X)", name, r)
	}
	return nil
}

// CheckVolume validates the identifying fields of a volume. Errors: CodeInvalid.
func CheckVolume(volumeID, mountPoint string, vt VolumeType) error {
	if err := CheckText("volumeId", volumeID, true, 256); err != nil {
		return err
	}
	if err := CheckText("mountPoint", mountPoint, false, 256); err != nil {
		return err
	}
	if !vt.Valid() {
		return Errorf(CodeInvalid, "volumeType: must be operatingSystem, fixedData or removable")
	}
	return nil
}

// EscrowRequest is one key an agent escrows. Material is already in canonical form.
type EscrowRequest struct {
	KeyID      string
	VolumeID   string
	MountPoint string
	VolumeType VolumeType
	Kind       KeyKind
	Material   string
}

// Report is what an agent reports about its device.
type Report struct {
	Volumes []ReportedVolume
	Events  []DeviceEvent
}

// ReportedVolume is one volume as the agent sees it now.
type ReportedVolume struct {
	Volume
	// Fingerprints maps a recovery-password key ID to the agent's HMAC-SHA256 of the password
	// on the volume, in lower-case hex.
	Fingerprints map[string]string
}

// Device event types.
const (
	EventEscrowFailed   = "escrowFailed"
	EventRotationFailed = "rotationFailed"
	EventRecoveryUsed   = "recoveryUsed"
)

// DeviceEvent is something the agent tells the server happened on the device.
type DeviceEvent struct {
	Type     string
	VolumeID string
	KeyID    string
	Message  string
	Time     time.Time
}

// Validate checks a report before anything is stored. Errors: CodeInvalid naming the field.
func (r Report) Validate() error {
	seen := map[string]bool{}
	for i, v := range r.Volumes {
		field := "volumes[" + strconv.Itoa(i) + "]."
		if err := CheckVolume(v.ID, v.MountPoint, v.Type); err != nil {
			return Errorf(CodeInvalid, "%s%s", field, ErrorMessage(err))
		}
		if seen[v.ID] {
			return Errorf(CodeInvalid, "%svolumeId: listed twice", field)
		}
		seen[v.ID] = true
		if !v.ProtectionStatus.Valid() {
			return Errorf(CodeInvalid, "%sprotectionStatus: must be on or off", field)
		}
		if !v.EncryptionStatus.Valid() {
			return Errorf(CodeInvalid, "%sencryptionStatus: not a BitLocker encryption status", field)
		}
		if !v.LockStatus.Valid() {
			return Errorf(CodeInvalid, "%slockStatus: must be unlocked or locked", field)
		}
		for j, p := range v.Protectors {
			pf := field + "keyProtectors[" + strconv.Itoa(j) + "]."
			if !p.Type.Valid() {
				return Errorf(CodeInvalid, "%stype: not a key protector type", pf)
			}
			if fp, ok := v.Fingerprints[p.KeyID]; ok && (len(fp) != 64 || !isLowerHex(fp) || p.Type != ProtectorRecoveryPassword) {
				return Errorf(CodeInvalid, "%sfingerprint: must be 64 lower-case hex digits, on a recovery password only", pf)
			}
		}
	}
	for i, ev := range r.Events {
		field := "events[" + strconv.Itoa(i) + "]."
		switch ev.Type {
		case EventEscrowFailed, EventRotationFailed, EventRecoveryUsed:
		default:
			return Errorf(CodeInvalid, "%stype: must be escrowFailed, rotationFailed or recoveryUsed", field)
		}
		if err := CheckText(field+"volumeId", ev.VolumeID, true, 256); err != nil {
			return err
		}
		if err := CheckText(field+"message", ev.Message, false, 2000); err != nil {
			return err
		}
	}
	return nil
}

func isLowerHex(s string) bool {
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// CommandResult is what a device reports when it has carried out a command.
type CommandResult struct {
	Completed bool
	NewKeyID  string // canonical; required when Completed
	Message   string
}

// DeviceDetail is a device with its volumes and escrow status.
type DeviceDetail struct {
	Device
	Status  StatusResult
	Volumes []VolumeDetail
	// MatchedKeys are the device's keys a search by key ID matched (SearchDevices only).
	MatchedKeys []RecoveryKey
}

// DeviceChange is an admin's change to a device; nil fields stay as they are.
type DeviceChange struct {
	// OwnerUPN is the new owner; "" clears it. Canonical once Validate has run.
	OwnerUPN *string
	// Tags replace the device's tags; an empty list clears them.
	Tags *[]string
	// Disputed marks the device disputed (true, with DisputeReason) or clears the mark.
	Disputed      *bool
	DisputeReason string
}

// MaxDeviceTags bounds the tags of one device.
const MaxDeviceTags = 32

// Validate checks the change and puts the owner and tags in canonical form (tags sorted,
// duplicates removed). Errors: CodeInvalid naming the field.
func (c *DeviceChange) Validate() error {
	if c.OwnerUPN == nil && c.Tags == nil && c.Disputed == nil {
		return Errorf(CodeInvalid, "body: give ownerUpn, tags or disputed")
	}
	if c.OwnerUPN != nil && strings.TrimSpace(*c.OwnerUPN) != "" {
		owner, err := CanonicalName("ownerUpn", *c.OwnerUPN)
		if err != nil {
			return err
		}
		if !strings.Contains(owner, "@") {
			return Errorf(CodeInvalid, "ownerUpn: must be a user principal name like alice@example.com")
		}
		c.OwnerUPN = &owner
	} else if c.OwnerUPN != nil {
		empty := ""
		c.OwnerUPN = &empty
	}
	if c.Tags != nil {
		tags, err := CanonicalTags("tags", *c.Tags)
		if err != nil {
			return err
		}
		c.Tags = &tags
	}
	if c.Disputed != nil && *c.Disputed {
		if err := CheckText("reason", c.DisputeReason, true, 500); err != nil {
			return err
		}
	}
	return nil
}

// CanonicalTags checks device tags (lower-case [a-z0-9-], 1 to 64 characters, at most
// MaxDeviceTags) and returns them sorted without duplicates. Errors: CodeInvalid naming field.
func CanonicalTags(field string, tags []string) ([]string, error) {
	if len(tags) > MaxDeviceTags {
		return nil, Errorf(CodeInvalid, "%s: at most %d tags", field, MaxDeviceTags)
	}
	out := make([]string, 0, len(tags))
	for i, t := range tags {
		if !validTag(t) {
			return nil, Errorf(CodeInvalid, "%s[%d]: 1 to 64 lower-case letters, digits and hyphens", field, i)
		}
		out = append(out, t)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func validTag(t string) bool {
	if len(t) == 0 || len(t) > 64 {
		return false
	}
	for _, c := range []byte(t) {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// VolumeDetail is a volume with its escrow status.
type VolumeDetail struct {
	Volume
	Status StatusResult
}

// DeviceFilter selects devices.
type DeviceFilter struct {
	Scope        Scope
	EscrowStatus EscrowStatus // empty: any
	Retired      bool         // false: devices in service; true: only retired ones
	Cursor       string
	Limit        int
}

// KeyFilter selects keys for a listing.
type KeyFilter struct {
	Scope       Scope
	DeviceID    string
	KeyIDPrefix string // canonical; a whole ID or at least MinKeyIDPrefix characters
	VolumeType  VolumeType
	Status      KeyStatus
	// EscrowStatus keeps keys of devices in that escrow status; empty: any.
	EscrowStatus EscrowStatus
	Cursor       string
	Limit        int
}

// Disclosure is the answer to a view of a device's keys.
type Disclosure struct {
	Device DeviceDetail
	Keys   []DisclosedKey
	// AuditSeq is the seq of the last event the disclosure recorded: once a receiver of the
	// trail has accepted it, it has every key.read of this disclosure.
	AuditSeq int64
	// Pending is set, and Keys empty, when the view needs a second person's approval first:
	// the request waiting for it (made now, or the requester's earlier one still pending).
	Pending *Approval
}

// AuditFilter selects audit events. Empty fields match everything.
type AuditFilter struct {
	DeviceID string
	KeyID    string
	Actor    string // an actor's ID or name
	Action   string
	Source   string
	Outcome  string
	Ticket   string
	Since    time.Time // inclusive
	Until    time.Time // exclusive
	// Before continues a newest-first listing: only events with a smaller seq.
	Before int64
	// Limit caps the number of events; 0 means no cap (exports).
	Limit int
}

// User is a person who signs in or holds API tokens.
type User struct {
	ID        string
	Email     string
	Role      Role
	ScopeTags []string
	CreatedAt time.Time
	// DisabledAt is when an admin took the person's access away; zero while they are enabled.
	// A disabled person cannot sign in and their API tokens are refused, until enabled again.
	DisabledAt time.Time
}

// Disabled reports whether the person's access is taken away.
func (u User) Disabled() bool { return !u.DisabledAt.IsZero() }

// SSOLogin is a single sign-on in flight, kept between the start and the provider's callback.
type SSOLogin struct {
	Nonce, Verifier string
	ReturnTo        string // a local path to go on to after signing in; "" for the home page
	// SetupHash is the hash of the setup link the sign-on was started from: the identity that
	// signs on becomes the first admin. nil for an ordinary sign-on.
	SetupHash []byte
}

// SSOSignOn is what a verified ID token says about the person signing on.
type SSOSignOn struct {
	// Issuer and Subject ("iss" and "sub") are the person's identity at the provider: the
	// only thing a later sign-on finds them by.
	Issuer, Subject string
	// Email is the email claim ("" when there is none) and EmailVerified whether the token
	// carried email_verified as exactly true. Only a verified email creates or links a person.
	Email         string
	EmailVerified bool
	// Role is the role the claims map to, or the default role. RoleClaimed is false when the
	// token carries no role claim at all: an existing person then keeps their role.
	Role        Role
	RoleClaimed bool
}

// UserChange is a change to a user; nil fields stay as they are.
type UserChange struct {
	Role      *Role
	ScopeTags *[]string
	Disabled  *bool
}

// APIToken describes an API token: never its secret nor the secret's hash.
type APIToken struct {
	ID         string
	UserEmail  string
	Name       string
	CreatedAt  time.Time
	LastUsedAt time.Time // zero: never used (kept to the minute)
	RevokedAt  time.Time // zero: not revoked
}

// EnrollmentTokenInfo describes an enrollment token: never its secret nor the secret's hash.
type EnrollmentTokenInfo struct {
	ID        string
	UsesLeft  *int64    // nil: unlimited
	ExpiresAt time.Time // zero: never
	CreatedBy string
	CreatedAt time.Time
	RevokedAt time.Time // zero: not revoked
}

// NewUser is what creating a user needs. PasswordHash is an argon2id hash, or empty for a user
// who only signs in through single sign-on or holds API tokens.
type NewUser struct {
	Email        string
	Role         Role
	ScopeTags    []string
	PasswordHash string
}

// EnrollmentToken is a newly issued enrollment token: its ID (for audit and revocation) and
// the token itself, shown once.
type EnrollmentToken struct {
	ID    string
	Token Token
}

// Problems an escrow report lists a device for.
const (
	ProblemFailed         = "failed"
	ProblemMissingEscrow  = "missingEscrow"
	ProblemPendingTooLong = "pendingTooLong"
)

// EscrowReport is the compliance view: how many devices are in each status, and which need
// attention.
type EscrowReport struct {
	GeneratedAt time.Time
	Total       int
	Counts      map[EscrowStatus]int
	// Problems are the listed devices, where a caller collects them; NextCursor continues a
	// list cut at a page's limit ("" at its end).
	Problems   []ReportProblem
	NextCursor string
}

// ReportPage selects part of an escrow report's list: Limit devices (0: all of them) after
// Cursor (a NextCursor of an earlier answer; "" from the start).
type ReportPage struct {
	Cursor string
	Limit  int
}

// Census counts the whole fleet: devices by escrow status and keys by status, every status
// present (zero when nothing is in it). It carries no names or IDs, only counts.
type Census struct {
	Devices map[EscrowStatus]int
	Keys    map[KeyStatus]int
}

// ReportProblem is a device an escrow report lists, with why.
type ReportProblem struct {
	Device  Device
	Status  StatusResult
	Problem string
}

// MaxTicket bounds a ticket number; the longest in common use are a few dozen characters.
const MaxTicket = 128

// Access is what a person gives for a view of key material or a rotation: why, under which
// ticket, and in which role they act. The ticket rule and two-person approval apply to staff
// (admin and helpdesk) only, never to self-service.
type Access struct {
	Reason string
	Ticket string
	Role   Role
}

// Staff reports whether the access is by admin or helpdesk.
func (a Access) Staff() bool { return a.Role == RoleAdmin || a.Role == RoleHelpdesk }
