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

// FuzzParsers feeds every parser the same input, starting from the recorded Windows outputs.
// No parser may panic, what they accept must be canonical, and no error may repeat anything of
// the input shaped like a recovery password (GUIDs, which errors name, are not material).
func FuzzParsers(f *testing.F) {
	for _, b := range agenttest.WindowsOutputs(f) {
		f.Add(b.Text)
	}
	f.Fuzz(func(t *testing.T, in string) {
		material := fuzzMaterial.FindAllString(fuzzGUID.ReplaceAllString(in, " "), -1)
		check := func(err error) {
			if err == nil {
				return
			}
			msg := fuzzGUID.ReplaceAllString(err.Error(), " ") // a key ID the error names
			for _, m := range material {
				if strings.Contains(msg, m) {
					t.Fatalf("error %q repeats %q of the input", err, m)
				}
			}
		}
		canonicalID := func(id string) {
			if c, err := bitlocker.CanonicalKeyID(id); err != nil || c != id {
				t.Fatalf("key ID %q is not canonical", id)
			}
		}
		canonicalDetails := func(ds []bitlocker.ProtectorDetail) {
			for _, d := range ds {
				canonicalID(d.KeyID)
				if d.RecoveryPassword != "" {
					if c, err := bitlocker.ParsePassword(d.RecoveryPassword); err != nil || c != d.RecoveryPassword || d.Type != bitlocker.RecoveryPassword {
						t.Fatalf("recovery password of %s not canonical or on a %s protector", d.KeyID, d.Type)
					}
				}
			}
		}
		vols, err := bitlocker.ParseVolumesJSON([]byte(in))
		check(err)
		for _, v := range vols {
			if v.ID == "" || v.MountPoint == "" || v.Type == "" {
				t.Fatalf("volume %+v lacks an ID, mount point or type", v)
			}
			for _, p := range v.Protectors {
				canonicalID(p.KeyID)
			}
		}
		ds, err := bitlocker.ParseProtectorsJSON([]byte(in))
		check(err)
		canonicalDetails(ds)
		ds, err = bitlocker.ParseProtectorList(in)
		check(err)
		canonicalDetails(ds)
		ds, err = bitlocker.ParseManageBDEProtectors(in)
		check(err)
		canonicalDetails(ds)
		events, err := bitlocker.ParseRecoveryEventsJSON([]byte(in))
		check(err)
		for _, e := range events {
			for _, g := range e.GUIDs {
				canonicalID(g)
			}
		}
		_, err = bitlocker.ParsePassword(in)
		check(err)
	})
}
