package escrow

import "time"

// ImportRecord is one recovery password read from an outside source (Active Directory, Entra
// ID, a CSV file) for the store to validate, seal and attach to a device.
type ImportRecord struct {
	// Position names the record in its source for reports: "line 12", "object CN=…". It never
	// holds key material.
	Position string
	Hostname string // the computer's name; the device it belongs to is found by it
	KeyID    string // the protector GUID, in any form ParseKeyID accepts
	// Password is the recovery password as the source holds it; validated and stored in
	// canonical form, never printed.
	Password   string
	OwnerUPN   string     // optional: the device's owner for a new device record
	VolumeType VolumeType // optional: operatingSystem when empty
	VolumeID   string     // optional: the source's volume GUID; derived from the key ID when empty
	CreatedAt  time.Time  // optional: when the source escrowed it; the import time when zero
}

// ImportOutcome is what an import did, or would do, with one record.
type ImportOutcome string

// The outcomes of an import.
const (
	ImportAdded     ImportOutcome = "added"     // sealed and stored, with its key.import event
	ImportUnchanged ImportOutcome = "unchanged" // the device already holds this key with this password
	ImportConflict  ImportOutcome = "conflict"  // the device holds a different password under this key ID: skipped
	ImportInvalid   ImportOutcome = "invalid"   // the record is not valid: skipped
)

// ImportResult reports one record of an import. Message is safe to print: it names the field
// at fault, never the material.
type ImportResult struct {
	Position  string
	Hostname  string
	KeyID     string
	DeviceID  string // the device it is (or would be) attached to; "" when invalid
	NewDevice bool   // the device record is (or would be) created by this import
	Outcome   ImportOutcome
	Message   string
}

// ExportedKey is one key written into a break-glass copy: its metadata, its device's owner and
// its material.
type ExportedKey struct {
	DisclosedKey
	OwnerUPN string
}
