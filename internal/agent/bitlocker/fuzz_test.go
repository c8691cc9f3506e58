package bitlocker_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/agent/agenttest"
	"github.com/keyward/keyward/internal/agent/bitlocker"
)

var (
	fuzzGUID     = regexp.MustCompile(`[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}`)
	fuzzMaterial = regexp.MustCompile(`[0-9]{6}(?:[- ]?[0-9]{6})+`)
)

// FuzzParsers feeds every parser of text that comes from Windows the same input: the event XML
// the event log renders, key protector IDs and recovery passwords, starting from rendered events
// and the recorded Windows outputs. No parser may panic, what they accept must be canonical,
// and no error may repeat anything of the input shaped like a recovery password.
func FuzzParsers(f *testing.F) {
	f.Add(recoveryEventXML)
	f.Add(managementEventXML)
	for _, b := range agenttest.WindowsOutputs(f) {
		f.Add(b.Text)
	}
	f.Fuzz(func(t *testing.T, in string) {
		material := fuzzMaterial.FindAllString(fuzzGUID.ReplaceAllString(in, " "), -1)
		check := func(err error) {
			if err == nil {
				return
			}
			msg := fuzzGUID.ReplaceAllString(err.Error(), " ")
			for _, m := range material {
				if strings.Contains(msg, m) {
					t.Fatalf("error %q repeats %q of the input", err, m)
				}
			}
		}
		e, err := bitlocker.ParseEventXML([]byte(in))
		check(err)
		if err == nil && (e.ID < 0 || e.ID > 65535 || e.Time.Location().String() != "UTC") {
			t.Fatalf("event %+v out of range", e)
		}
		if id, err := bitlocker.CanonicalKeyID(in); err == nil {
			if c, err := bitlocker.CanonicalKeyID(id); err != nil || c != id {
				t.Fatalf("key ID %q is not canonical", id)
			}
		}
		pw, err := bitlocker.ParsePassword(in)
		check(err)
		if err == nil {
			if c, err := bitlocker.ParsePassword(pw); err != nil || c != pw {
				t.Fatalf("password not canonical")
			}
		}
	})
}
