// Package wire holds the JSON the agent exchanges with the server: the agent endpoints of SPEC
// §7, field for field. The agent keeps its own copy rather than importing the server's types, so
// that the two programs share only this contract. The server refuses unknown fields, so nothing
// here may carry a field the contract does not name.
package wire

import "time"

// Paths of the agent endpoints.
const (
	PathEnroll   = "/api/agent/enroll"
	PathKeys     = "/api/agent/keys/" // + keyId
	PathReport   = "/api/agent/report"
	PathCommands = "/api/agent/commands" // GET; + "/" + id + "/result" to POST a result
)

// Escrow kinds.
const (
	KindRecoveryPassword = "recoveryPassword"
	KindRecoveryKey      = "recoveryKey"
)

// Command types.
const (
	CommandRotate   = "rotateRecoveryPassword"
	CommandReEscrow = "escrowRecoveryPassword"
)

// Event types.
const (
	EventEscrowFailed   = "escrowFailed"
	EventRotationFailed = "rotationFailed"
	EventRecoveryUsed   = "recoveryUsed"
)

// Result statuses.
const (
	StatusCompleted = "completed"
	StatusFailed    = "failed"
)

// EnrollRequest is the body of POST /api/agent/enroll.
type EnrollRequest struct {
	EnrollmentToken string `json:"enrollmentToken"`
	Hostname        string `json:"hostname"`
	SerialNumber    string `json:"serialNumber"`
	OSVersion       string `json:"osVersion"`
	OwnerUPN        string `json:"ownerUpn,omitempty"`
}

// EnrollResponse is the answer to an enrollment: the device's identity and its two secrets.
type EnrollResponse struct {
	DeviceID        string `json:"deviceId"`
	DeviceToken     string `json:"deviceToken"`
	VerificationKey string `json:"verificationKey"` // standard base64 of 32 bytes
}

// EscrowRequest is the body of PUT /api/agent/keys/{keyId}: exactly one of RecoveryPassword
// and RecoveryKey is set.
type EscrowRequest struct {
	VolumeID         string  `json:"volumeId"`
	MountPoint       string  `json:"mountPoint"`
	VolumeType       string  `json:"volumeType"`
	Kind             string  `json:"kind"`
	RecoveryPassword *string `json:"recoveryPassword,omitempty"`
	RecoveryKey      *string `json:"recoveryKey,omitempty"`
}

// Report is the body of POST /api/agent/report.
type Report struct {
	Volumes []Volume `json:"volumes"`
	Events  []Event  `json:"events"`
}

// Volume is one volume in a report.
type Volume struct {
	VolumeID         string `json:"volumeId"`
	MountPoint       string `json:"mountPoint"`
	VolumeType       string `json:"volumeType"`
	ProtectionStatus string `json:"protectionStatus"`
	EncryptionStatus string `json:"encryptionStatus"`
	// LockStatus is LockUnlocked or LockLocked; empty (left out) only for a server that
	// predates the field.
	LockStatus    string      `json:"lockStatus,omitempty"`
	KeyProtectors []Protector `json:"keyProtectors"`
}

// Lock statuses of a volume.
const (
	LockUnlocked = "unlocked"
	LockLocked   = "locked"
)

// Protector is one key protector in a report. Fingerprint is set for recovery passwords only.
type Protector struct {
	KeyID       string `json:"keyId"`
	Type        string `json:"type"`
	Fingerprint string `json:"fingerprint,omitempty"`
}

// Event is something the agent tells the server happened on the device.
type Event struct {
	Type     string    `json:"type"`
	VolumeID string    `json:"volumeId"`
	KeyID    string    `json:"keyId,omitempty"`
	Message  string    `json:"message,omitempty"`
	Time     time.Time `json:"time"`
}

// ReportResponse is the answer to a report: the device's pending commands.
type ReportResponse struct {
	Commands []Command `json:"commands"`
}

// CommandList is the answer to GET /api/agent/commands.
type CommandList struct {
	Items []Command `json:"items"`
}

// Command is work the server asks the device to do.
type Command struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	VolumeID string `json:"volumeId"`
	KeyID    string `json:"keyId,omitempty"`
}

// CommandResult is the body of POST /api/agent/commands/{id}/result.
type CommandResult struct {
	Status   string `json:"status"`
	NewKeyID string `json:"newKeyId,omitempty"`
	Message  string `json:"message,omitempty"`
}

// ErrorResponse is the body of every error answer.
type ErrorResponse struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}
