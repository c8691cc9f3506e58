package bitlocker

import (
	"fmt"
	"regexp"
	"strings"
)

// manage-bde translates its labels ("Numerical Password", "Numerisches Kennwort", ...), so this
// parser does not read them. It keys on what every language prints the same way: a protector
// starts at the line holding its ID in braces, a recovery password is a line of eight
// hyphen-joined groups, and an external key names its .BEK file.

var (
	// bracedID is a line that ends in an ID in braces, as "ID: {…}" does in every language.
	bracedID = regexp.MustCompile(`^[^"{}]*\{([^{}]*)\}$`)
	// passwordShaped is a line that is meant to be a recovery password, valid or not: eight
	// groups of letters and digits joined by hyphens. It is then checked as one, so a damaged
	// password is reported rather than skipped.
	passwordShaped = regexp.MustCompile(`^[0-9A-Za-z]{1,12}(?:-[0-9A-Za-z]{1,12}){7}$`)
)

// ParseManageBDEProtectors reads the output of `manage-bde -protectors -get VOLUME` in any
// language: every protector's key ID, recovery passwords (checked, canonical) and, where no
// password and no .BEK file tells the type, Other, or TPM for a label that is just "TPM" (the
// same in every language). Types matter to the agent only for recovery passwords.
func ParseManageBDEProtectors(text string) ([]ProtectorDetail, error) {
	const what = "manage-bde output"
	var out []ProtectorDetail
	prev := "" // the last non-blank line before the current one: a protector's label
	for i, raw := range strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n") {
		line := strings.TrimSpace(raw)
		if line == "" {
			continue
		}
		n := i + 1
		if m := bracedID.FindStringSubmatch(line); m != nil {
			id, err := CanonicalKeyID(m[1])
			if err != nil {
				return nil, fmt.Errorf("%s: line %d: %w", what, n, err)
			}
			d := ProtectorDetail{Protector: Protector{KeyID: id, Type: Other}}
			if strings.EqualFold(strings.TrimSuffix(prev, ":"), "TPM") {
				d.Type = TPM
			}
			out = append(out, d)
			prev = line
			continue
		}
		prev = line
		if len(out) == 0 {
			if passwordShaped.MatchString(line) {
				return nil, fmt.Errorf("%s: line %d: a recovery password before any protector ID", what, n)
			}
			continue
		}
		cur := &out[len(out)-1]
		switch {
		case passwordShaped.MatchString(line):
			if cur.RecoveryPassword != "" {
				return nil, fmt.Errorf("%s: line %d: %s has two recovery passwords", what, n, cur.KeyID)
			}
			pw, err := ParsePassword(line)
			if err != nil {
				return nil, fmt.Errorf("%s: line %d: %s: %w", what, n, cur.KeyID, err)
			}
			cur.Type, cur.RecoveryPassword = RecoveryPassword, pw
		case strings.HasSuffix(strings.ToUpper(line), ".BEK"):
			// The file name is the protector's GUID; one that is not is a damaged paste.
			name := line[strings.LastIndexAny(line, " \t:")+1:]
			if _, err := CanonicalKeyID(strings.TrimSuffix(strings.TrimSuffix(name, ".BEK"), ".bek")); err != nil {
				return nil, fmt.Errorf("%s: line %d: external key file name is not GUID.BEK", what, n)
			}
			cur.Type, cur.KeyFileName = ExternalKey, name
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no key protector (no line with an ID in braces)", what)
	}
	return out, nil
}
