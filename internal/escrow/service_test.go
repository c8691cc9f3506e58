package escrow_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

const (
	passwordKeyID = "0A1B2C3D-4E5F-6789-ABCD-EF0123456789"
	tpmKeyID      = "11111111-2222-3333-4444-555555555555"
	fingerprint   = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
)

// goodReport returns a fresh, valid report: C: encrypted with a recovery password (with its
// fingerprint) and a TPM protector, D: off, and one event.
func goodReport() escrow.Report {
	return escrow.Report{
		Volumes: []escrow.ReportedVolume{
			{
				Volume: escrow.Volume{ID: `\\?\Volume{3f2a9c1b-5d4e-4f60-8a7b-1c2d3e4f5a6b}\`, MountPoint: "C:",
					Type: escrow.VolumeOperatingSystem, ProtectionStatus: escrow.ProtectionOn, EncryptionStatus: escrow.FullyEncrypted,
					Protectors: []escrow.Protector{
						{KeyID: passwordKeyID, Type: escrow.ProtectorRecoveryPassword},
						{KeyID: tpmKeyID, Type: escrow.ProtectorTPM},
					}},
				Fingerprints: map[string]string{passwordKeyID: fingerprint},
			},
			{
				Volume: escrow.Volume{ID: `\\?\Volume{7c9e6679-7425-40de-944b-e07fc1f90ae7}\`, MountPoint: "D:",
					Type: escrow.VolumeFixedData, ProtectionStatus: escrow.ProtectionOff, EncryptionStatus: escrow.FullyDecrypted},
			},
		},
		Events: []escrow.DeviceEvent{
			{Type: escrow.EventRecoveryUsed, VolumeID: `\\?\Volume{3f2a9c1b-5d4e-4f60-8a7b-1c2d3e4f5a6b}\`, KeyID: passwordKeyID,
				Message: "recovery password used at boot", Time: time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)},
		},
	}
}

func TestReportValidate(t *testing.T) {
	tests := []struct {
		name      string
		change    func(r *escrow.Report)
		wantField string // the field the error names first; empty for a valid report
		wantText  string // more of the message, where it matters
	}{
		{name: "valid report", change: func(r *escrow.Report) {}},
		{name: "empty report", change: func(r *escrow.Report) { *r = escrow.Report{} }},
		{name: "volume ID of 256 bytes", change: func(r *escrow.Report) { r.Volumes[1].ID = strings.Repeat("v", 256) }},
		{name: "all three event types", change: func(r *escrow.Report) {
			ev := r.Events[0]
			r.Events = nil
			for _, typ := range []string{escrow.EventEscrowFailed, escrow.EventRotationFailed, escrow.EventRecoveryUsed} {
				ev.Type = typ
				r.Events = append(r.Events, ev)
			}
		}},
		{name: "event message of 2000 bytes", change: func(r *escrow.Report) { r.Events[0].Message = strings.Repeat("m", 2000) }},
		{name: "non-ASCII text is fine", change: func(r *escrow.Report) { r.Events[0].Message = "Wiederherstellung benötigt – ✓" }},

		{name: "empty volume ID", change: func(r *escrow.Report) { r.Volumes[1].ID = "" },
			wantField: "volumes[1].volumeId", wantText: "required"},
		{name: "volume ID of 257 bytes", change: func(r *escrow.Report) { r.Volumes[0].ID = strings.Repeat("v", 257) },
			wantField: "volumes[0].volumeId"},
		{name: "volume ID with a newline", change: func(r *escrow.Report) { r.Volumes[0].ID += "\nforged log line" },
			wantField: "volumes[0].volumeId"},
		{name: "duplicate volume ID", change: func(r *escrow.Report) { r.Volumes[1].ID = r.Volumes[0].ID },
			wantField: "volumes[1].volumeId", wantText: "twice"},
		{name: "mount point with an escape sequence", change: func(r *escrow.Report) { r.Volumes[0].MountPoint = "C:\x1b[2J" },
			wantField: "volumes[0].mountPoint", wantText: "control"},
		{name: "mount point with invalid UTF-8", change: func(r *escrow.Report) { r.Volumes[1].MountPoint = "D:\xc3\x28" },
			wantField: "volumes[1].mountPoint", wantText: "UTF-8"},
		{name: "unknown volume type", change: func(r *escrow.Report) { r.Volumes[1].Type = "cdrom" },
			wantField: "volumes[1].volumeType"},
		{name: "missing protection status", change: func(r *escrow.Report) { r.Volumes[1].ProtectionStatus = "" },
			wantField: "volumes[1].protectionStatus"},
		{name: "unknown protection status", change: func(r *escrow.Report) { r.Volumes[1].ProtectionStatus = "On" },
			wantField: "volumes[1].protectionStatus"},
		{name: "missing encryption status", change: func(r *escrow.Report) { r.Volumes[0].EncryptionStatus = "" },
			wantField: "volumes[0].encryptionStatus"},
		{name: "unknown encryption status", change: func(r *escrow.Report) { r.Volumes[1].EncryptionStatus = "encrypted" },
			wantField: "volumes[1].encryptionStatus"},
		{name: "unknown protector type", change: func(r *escrow.Report) { r.Volumes[0].Protectors[1].Type = "fido" },
			wantField: "volumes[0].keyProtectors[1].type"},
		{name: "fingerprint on a TPM protector", change: func(r *escrow.Report) { r.Volumes[0].Fingerprints[tpmKeyID] = fingerprint },
			wantField: "volumes[0].keyProtectors[1].fingerprint"},
		{name: "fingerprint on an external key", change: func(r *escrow.Report) {
			r.Volumes[0].Protectors[0].Type = escrow.ProtectorExternalKey
		}, wantField: "volumes[0].keyProtectors[0].fingerprint"},
		{name: "upper-case fingerprint", change: func(r *escrow.Report) {
			r.Volumes[0].Fingerprints[passwordKeyID] = strings.ToUpper(fingerprint)
		}, wantField: "volumes[0].keyProtectors[0].fingerprint"},
		{name: "short fingerprint", change: func(r *escrow.Report) {
			r.Volumes[0].Fingerprints[passwordKeyID] = fingerprint[:63]
		}, wantField: "volumes[0].keyProtectors[0].fingerprint"},
		{name: "long fingerprint", change: func(r *escrow.Report) {
			r.Volumes[0].Fingerprints[passwordKeyID] = fingerprint + "0"
		}, wantField: "volumes[0].keyProtectors[0].fingerprint"},
		{name: "empty fingerprint", change: func(r *escrow.Report) {
			r.Volumes[0].Fingerprints[passwordKeyID] = ""
		}, wantField: "volumes[0].keyProtectors[0].fingerprint"},
		{name: "non-hex fingerprint", change: func(r *escrow.Report) {
			r.Volumes[0].Fingerprints[passwordKeyID] = strings.Repeat("g", 64)
		}, wantField: "volumes[0].keyProtectors[0].fingerprint"},
		{name: "base64 fingerprint of the right length", change: func(r *escrow.Report) {
			r.Volumes[0].Fingerprints[passwordKeyID] = strings.Repeat("n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=", 2)[:64]
		}, wantField: "volumes[0].keyProtectors[0].fingerprint"},
		{name: "unknown event type", change: func(r *escrow.Report) { r.Events[0].Type = "keyLost" },
			wantField: "events[0].type"},
		{name: "event type in the wrong case", change: func(r *escrow.Report) { r.Events[0].Type = "EscrowFailed" },
			wantField: "events[0].type"},
		{name: "empty event type", change: func(r *escrow.Report) { r.Events[0].Type = "" },
			wantField: "events[0].type"},
		{name: "second event without volume ID", change: func(r *escrow.Report) {
			r.Events = append(r.Events, escrow.DeviceEvent{Type: escrow.EventEscrowFailed, Message: "access denied"})
		}, wantField: "events[1].volumeId", wantText: "required"},
		{name: "event message with a control character", change: func(r *escrow.Report) { r.Events[0].Message = "denied\x07" },
			wantField: "events[0].message", wantText: "control"},
		{name: "event message with a newline", change: func(r *escrow.Report) { r.Events[0].Message = "line one\nline two" },
			wantField: "events[0].message", wantText: "control"},
		{name: "event message with invalid UTF-8", change: func(r *escrow.Report) { r.Events[0].Message = "caf\xe9" },
			wantField: "events[0].message", wantText: "UTF-8"},
		{name: "event message of 2001 bytes", change: func(r *escrow.Report) { r.Events[0].Message = strings.Repeat("m", 2001) },
			wantField: "events[0].message", wantText: "2000"},
		{name: "first failing field is named: volume before event", change: func(r *escrow.Report) {
			r.Volumes[1].ProtectionStatus = "maybe"
			r.Events[0].Type = "keyLost"
		}, wantField: "volumes[1].protectionStatus"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := goodReport()
			tt.change(&r)
			err := r.Validate()
			checkFieldError(t, err, tt.wantField, tt.wantText)
		})
	}
}

func TestEnrollmentValidate(t *testing.T) {
	good := func() escrow.Enrollment {
		return escrow.Enrollment{Hostname: "LT-0042", SerialNumber: "PF3ABCDE", OSVersion: "10.0.22631", OwnerUPN: "alice@example.com"}
	}
	tests := []struct {
		name      string
		change    func(e *escrow.Enrollment)
		wantField string
		wantText  string
	}{
		{name: "all fields", change: func(e *escrow.Enrollment) {}},
		{name: "hostname only", change: func(e *escrow.Enrollment) { *e = escrow.Enrollment{Hostname: "LT-0042"} }},
		{name: "hostname of 256 bytes", change: func(e *escrow.Enrollment) { e.Hostname = strings.Repeat("h", 256) }},
		{name: "missing hostname", change: func(e *escrow.Enrollment) { e.Hostname = "" },
			wantField: "hostname", wantText: "required"},
		{name: "blank hostname", change: func(e *escrow.Enrollment) { e.Hostname = " \t " },
			wantField: "hostname", wantText: "required"},
		{name: "hostname of 257 bytes", change: func(e *escrow.Enrollment) { e.Hostname = strings.Repeat("h", 257) },
			wantField: "hostname"},
		{name: "hostname with a newline", change: func(e *escrow.Enrollment) { e.Hostname = "LT-0042\nadmin" },
			wantField: "hostname"},
		{name: "serial number with NUL", change: func(e *escrow.Enrollment) { e.SerialNumber = "PF3\x00" },
			wantField: "serialNumber"},
		{name: "OS version with invalid UTF-8", change: func(e *escrow.Enrollment) { e.OSVersion = "10.0\xff" },
			wantField: "osVersion"},
		{name: "owner without @", change: func(e *escrow.Enrollment) { e.OwnerUPN = "alice" },
			wantField: "ownerUpn"},
		{name: "owner as DOMAIN\\user", change: func(e *escrow.Enrollment) { e.OwnerUPN = `EXAMPLE\alice` },
			wantField: "ownerUpn"},
		{name: "owner with a control character", change: func(e *escrow.Enrollment) { e.OwnerUPN = "alice@example.com\x1b" },
			wantField: "ownerUpn"},
		{name: "owner of 257 bytes", change: func(e *escrow.Enrollment) { e.OwnerUPN = strings.Repeat("a", 245) + "@example.com" },
			wantField: "ownerUpn"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := good()
			tt.change(&e)
			checkFieldError(t, e.Validate(), tt.wantField, tt.wantText)
		})
	}
}

func TestCheckText(t *testing.T) {
	tests := []struct {
		name     string
		value    string
		required bool
		max      int
		wantErr  string // substring of the message after "field: "; empty for no error
	}{
		{name: "optional and empty", value: "", max: 10},
		{name: "required and present", value: "x", required: true, max: 10},
		{name: "exactly max bytes", value: "0123456789", max: 10},
		{name: "printable Unicode", value: "Zoë’s laptop 💻", max: 100},
		{name: "required and empty", value: "", required: true, max: 10, wantErr: "required"},
		{name: "required and only whitespace", value: " \u00a0 ", required: true, max: 10, wantErr: "required"},
		{name: "one byte over max", value: "01234567890", max: 10, wantErr: "at most 10 bytes"},
		{name: "max counts bytes, not characters", value: "ééé", max: 5, wantErr: "at most 5 bytes"},
		{name: "NUL", value: "a\x00b", max: 10, wantErr: "control"},
		{name: "escape", value: "\x1b[31mred", max: 20, wantErr: "control"},
		{name: "line feed", value: "a\nb", max: 10, wantErr: "control"},
		{name: "carriage return", value: "a\rb", max: 10, wantErr: "control"},
		{name: "tab", value: "a\tb", max: 10, wantErr: "control"},
		{name: "delete", value: "a\x7fb", max: 10, wantErr: "control"},
		{name: "invalid UTF-8", value: "a\xc3\x28", max: 10, wantErr: "UTF-8"},
		{name: "lone continuation byte", value: "\x80", max: 10, wantErr: "UTF-8"},
		{name: "UTF-16 surrogate encoded in UTF-8", value: "\xed\xa0\x80", max: 10, wantErr: "UTF-8"},
		{name: "C1 control NEL (U+0085)", value: "a\u0085b", max: 10, wantErr: "control"},
		{name: "C1 control CSI (U+009B)", value: "\u009b2J", max: 10, wantErr: "control"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := escrow.CheckText("reason", tt.value, tt.required, tt.max)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckText(%q): %v", tt.value, err)
				}
				return
			}
			checkFieldError(t, err, "reason", tt.wantErr)
		})
	}
}

// checkFieldError checks that err is nil when field is empty, and otherwise an invalid-request
// error whose caller-safe message starts with the field's name and contains text.
func checkFieldError(t *testing.T, err error, field, text string) {
	t.Helper()
	if field == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("no error, want one naming %s", field)
	}
	if code := escrow.ErrorCode(err); code != escrow.CodeInvalid {
		t.Errorf("error code = %q, want %q", code, escrow.CodeInvalid)
	}
	msg := escrow.ErrorMessage(err)
	if !strings.HasPrefix(msg, field+": ") {
		t.Errorf("message %q does not start with %q", msg, field+": ")
	}
	if !strings.Contains(msg, text) {
		t.Errorf("message %q does not contain %q", msg, text)
	}
}

func TestDeviceChangeValidate(t *testing.T) {
	str := func(s string) *string { return &s }
	tags := func(t ...string) *[]string { return &t }
	yes := true
	many := make([]string, 33)
	for i := range many {
		many[i] = "t"
	}
	tests := []struct {
		name      string
		ch        escrow.DeviceChange
		wantErr   string // prefix of the message; "" for valid
		wantOwner string
		wantTags  []string
	}{
		{"owner canonical", escrow.DeviceChange{OwnerUPN: str(" Alice@Example.COM ")}, "", "alice@example.com", nil},
		{"owner cleared", escrow.DeviceChange{OwnerUPN: str("")}, "", "", nil},
		{"owner look-alike", escrow.DeviceChange{OwnerUPN: str("ſam@example.com")}, "ownerUpn:", "", nil},
		{"owner without @", escrow.DeviceChange{OwnerUPN: str("alice")}, "ownerUpn:", "", nil},
		{"tags sorted, duplicates dropped", escrow.DeviceChange{Tags: tags("lab", "a-1", "lab")}, "", "", []string{"a-1", "lab"}},
		{"tags cleared", escrow.DeviceChange{Tags: tags()}, "", "", []string{}},
		{"tag upper case", escrow.DeviceChange{Tags: tags("ok", "Lab")}, "tags[1]:", "", nil},
		{"tag underscore", escrow.DeviceChange{Tags: tags("a_b")}, "tags[0]:", "", nil},
		{"tag 64 long", escrow.DeviceChange{Tags: tags(strings.Repeat("a", 64))}, "", "", []string{strings.Repeat("a", 64)}},
		{"tag 65 long", escrow.DeviceChange{Tags: tags(strings.Repeat("a", 65))}, "tags[0]:", "", nil},
		{"33 tags", escrow.DeviceChange{Tags: &many}, "tags: at most 32", "", nil},
		{"dispute needs a reason", escrow.DeviceChange{Disputed: &yes}, "reason:", "", nil},
		{"nothing", escrow.DeviceChange{}, "body:", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := tt.ch
			err := ch.Validate()
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(escrow.ErrorMessage(err), tt.wantErr) || escrow.ErrorCode(err) != escrow.CodeInvalid {
					t.Fatalf("Validate() = %v, want %s…", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Validate() = %v", err)
			}
			if ch.OwnerUPN != nil && *ch.OwnerUPN != tt.wantOwner {
				t.Errorf("owner = %q, want %q", *ch.OwnerUPN, tt.wantOwner)
			}
			if tt.wantTags != nil && !slices.Equal(*ch.Tags, tt.wantTags) {
				t.Errorf("tags = %q, want %q", *ch.Tags, tt.wantTags)
			}
		})
	}
}
