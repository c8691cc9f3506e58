package bitlocker

import (
	"fmt"
	"regexp"
)

// ProtectorDetail is a key protector together with the material a tool printed for it. It is
// what the parsers return; the agent takes the one field it needs and drops the rest.
type ProtectorDetail struct {
	Protector
	// RecoveryPassword is the canonical recovery password of a recovery-password protector
	// whose output showed it, else empty. Key material.
	RecoveryPassword string
	// ExternalKey is the 256-bit key of an external-key protector whose output showed it, and
	// HasExternalKey says whether it did. Key material.
	ExternalKey    [32]byte
	HasExternalKey bool
	// KeyFileName is the .BEK file name of an external key, when shown.
	KeyFileName string
}

// Format prints the detail without its material, whatever the verb: a ProtectorDetail that
// ends up in a log line or an error through %v or %+v must not carry the password with it.
func (d ProtectorDetail) Format(f fmt.State, verb rune) {
	material := ""
	if d.RecoveryPassword != "" || d.HasExternalKey {
		material = " material:[redacted]"
	}
	fmt.Fprintf(f, "{KeyID:%s Type:%s%s}", d.KeyID, d.Type, material)
}

// materialLike matches what could be key material or a part of it in a tool's message: two or
// more groups of six digits or a run of twelve or more digits (a recovery password), and a run
// of 40 or more hex digits (a recovery key). Shorter runs, such as the HRESULTs and GUIDs that
// make a message useful, stay readable.
var materialLike = regexp.MustCompile(`[0-9]{6}(?:[- ]?[0-9]{6})+|[0-9A-Fa-f]{40,}`)

// Redact removes anything shaped like key material from a message printed by a Windows tool
// (PowerShell's error output quotes command lines and parameters), so the message can go into
// an error and the log.
func Redact(s string) string {
	return materialLike.ReplaceAllString(s, "[redacted]")
}
