package escrow

import "time"

// ActorType says what kind of party acted.
type ActorType string

// The actor types.
const (
	ActorUser   ActorType = "user"
	ActorToken  ActorType = "token"
	ActorDevice ActorType = "device"
	ActorSystem ActorType = "system"
)

// Actor is who performed an audited action.
type Actor struct {
	Type ActorType
	ID   string
	Name string
}

// Source is where an audited action came from.
type Source string

// The sources.
const (
	SourceAdminPortal Source = "admin_portal"
	SourceSelfService Source = "self_service"
	SourceAPI         Source = "api"
	SourceAgent       Source = "agent"
	SourceCLI         Source = "cli"
	SourceSystem      Source = "system"
)

// Outcome is how an audited action ended.
type Outcome string

// The outcomes.
const (
	OutcomeSuccess Outcome = "success"
	OutcomeDenied  Outcome = "denied"
	OutcomeError   Outcome = "error"
)

// Audited actions.
const (
	ActionKeyRead           = "key.read"
	ActionKeyRequest        = "key.request" // a view waiting for a second person's approval
	ActionKeyApprove        = "key.approve" // a second person approved a waiting view
	ActionKeyDeny           = "key.deny"    // a second person refused a waiting view
	ActionKeyList           = "key.list"
	ActionKeyEscrow         = "key.escrow"
	ActionKeyImport         = "key.import" // a key brought in from Active Directory, Entra ID or a file
	ActionKeyExport         = "key.export" // every key disclosed at once into a break-glass copy
	ActionKeySupersede      = "key.supersede"
	ActionKeyVerify         = "key.verify"
	ActionKeyPurge          = "key.purge"
	ActionRotateRequest     = "key.rotate.request"
	ActionRotateDeliver     = "key.rotate.deliver"
	ActionRotateComplete    = "key.rotate.complete"
	ActionRotateFail        = "key.rotate.fail"
	ActionDeviceEnroll      = "device.enroll"
	ActionDeviceReport      = "device.report"
	ActionAuth              = "auth.token"
	ActionUserCreate        = "user.create"
	ActionSetupLink         = "setup.link"  // a one-time link to create the first admin was made
	ActionSetupAdmin        = "setup.admin" // the first admin was created from a setup link
	ActionTokenCreate       = "token.create"
	ActionEnrollTokenCreate = "enrollment_token.create"
	ActionSettingsUpdate    = "settings.update"
	ActionIncidentStart     = "incident.start" // incident mode switched on, or its end moved
	ActionIncidentStop      = "incident.stop"
	ActionSignIn            = "auth.signin"
	ActionSignOut           = "auth.signout"
	ActionUserRole          = "user.role"
	ActionUserDisable       = "user.disable"
	ActionUserEnable        = "user.enable"
	ActionUserSSOLink       = "user.sso_link"       // a person linked to a single sign-on identity
	ActionUserSSOLinkAllow  = "user.sso_link_allow" // an admin allowed a password account's link
	ActionUserRead          = "user.read"
	ActionTokenRevoke       = "token.revoke"
	ActionTokenRead         = "token.read"
	ActionEnrollTokenRevoke = "enrollment_token.revoke"
	ActionEnrollTokenRead   = "enrollment_token.read"
	ActionDeviceRead        = "device.read"
	ActionDeviceRetire      = "device.retire"
	ActionDeviceUpdate      = "device.update"
	ActionDeviceDispute     = "device.dispute"
	ActionMetricsRead       = "metrics.read" // recorded only when refused
	ActionStoreBackup       = "store.backup"
	ActionStoreRestore      = "store.restore"
	ActionStoreMigrate      = "store.migrate"
	ActionMasterKeyRotate   = "masterkey.rotate"
	ActionMasterKeyRetire   = "masterkey.retire"
)

// Origin is who is acting and from where; every audited operation takes one.
type Origin struct {
	Actor     Actor
	Source    Source
	IP        string
	UserAgent string
}

// AuditEvent is one entry of the tamper-evident audit trail.
type AuditEvent struct {
	Seq       int64
	Time      time.Time
	Actor     Actor
	Action    string
	DeviceID  string
	KeyID     string
	Source    Source
	Reason    string
	Outcome   Outcome
	IP        string
	UserAgent string
	// Detail is extra context that is safe to keep forever (a rotation ID, an error message,
	// which settings changed). Never key material.
	Detail string
	// Ticket is the incident or change number the action was taken under; empty for none.
	Ticket string
	// Hash is SHA-256 over the previous event's hash and this event's canonical encoding.
	Hash []byte
}

// Event returns an audit event for this origin; the store fills in Seq, Time and Hash.
func (o Origin) Event(action string, outcome Outcome) AuditEvent {
	return AuditEvent{Actor: o.Actor, Action: action, Source: o.Source, Outcome: outcome, IP: o.IP, UserAgent: o.UserAgent}
}
