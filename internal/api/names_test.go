package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/bitlockertest"
)

// TestLookAlikeNames: a sign-in name or owner UPN has one canonical form (lower-case ASCII);
// a look-alike such as "ſam" (U+017F, which Unicode case folding matches with "sam") is refused
// where it would be stored, and can never reach sam's devices or tokens.
func TestLookAlikeNames(t *testing.T) {
	e := newEnv(t)
	sam := e.person("user", "Sam@Example.com")
	d := e.enroll("LT-SAM", "SAM@example.COM")
	const lookAlike = "\u017fam@example.com"

	var users struct{ Items []struct{ Email string } }
	e.must(200, e.do("GET", "/api/users", e.admin, nil)).json(t, &users)
	before := len(users.Items)
	for _, email := range []string{lookAlike, "\u212aeith@example.com", "s\u0430m@example.com"} {
		r := e.must(400, e.do("POST", "/api/users", e.admin, map[string]any{"email": email, "role": "user"}))
		if m := r.errorMessage(t); !strings.HasPrefix(m, "email:") {
			t.Errorf("POST /api/users %q: message %q does not name email", email, m)
		}
	}
	e.must(200, e.do("GET", "/api/users", e.admin, nil)).json(t, &users)
	if len(users.Items) != before {
		t.Fatalf("refused users were stored: %+v", users.Items)
	}
	for _, u := range users.Items {
		if u.Email != strings.ToLower(u.Email) {
			t.Errorf("stored email %q is not canonical", u.Email)
		}
	}

	var tok struct{ Token string }
	e.must(201, e.do("POST", "/api/enrollment-tokens", e.admin, map[string]any{"uses": 1})).json(t, &tok)
	r := e.must(400, e.do("POST", "/api/agent/enroll", "", map[string]any{"enrollmentToken": tok.Token, "hostname": "LT-FAKE", "ownerUpn": lookAlike}))
	if m := r.errorMessage(t); !strings.HasPrefix(m, "ownerUpn:") {
		t.Errorf("enrollment with a look-alike owner: %q", m)
	}

	// The owner given in another case is sam's, stored canonical.
	var list struct {
		Items []struct{ DeviceID, OwnerUpn string }
	}
	e.must(200, e.do("GET", "/api/devices", sam, nil)).json(t, &list)
	if len(list.Items) != 1 || list.Items[0].DeviceID != d.ID || list.Items[0].OwnerUpn != "sam@example.com" {
		t.Fatalf("sam's devices: %+v", list.Items)
	}
	r = e.must(400, e.do("POST", "/api/tokens", e.admin, map[string]any{"userEmail": lookAlike}))
	if m := r.errorMessage(t); !strings.HasPrefix(m, "userEmail:") {
		t.Errorf("token for a look-alike: %q", m)
	}
	r = e.must(400, e.do("GET", "/api/tokens?user="+lookAlike, e.admin, nil))
	if m := r.errorMessage(t); !strings.HasPrefix(m, "user:") {
		t.Errorf("token list of a look-alike: %q", m)
	}
}

// TestFormatCharactersRefused: text that would render as something else (U+202E reverses what
// follows it, so "LT-\u202e2400" shows as "LT-0042") is refused with a 400 naming the field, and
// nothing is stored.
func TestFormatCharactersRefused(t *testing.T) {
	e := newEnv(t)
	d := e.enroll("LT-0042", "alice@example.com")
	s := bitlockertest.Samples(t)[0]
	e.must(201, e.do("PUT", "/api/agent/keys/"+s.KeyID, d.Token, escrowBody(`\\?\Volume{1}\`, s.Password)))
	e.report(d, volumeReport{VolumeID: `\\?\Volume{1}\`, MountPoint: "C:", VolumeType: "operatingSystem", ProtectionStatus: "on",
		EncryptionStatus: "fullyEncrypted", KeyProtectors: []map[string]any{{"keyId": s.KeyID, "type": "recoveryPassword"}}})
	var tok struct{ Token string }
	e.must(201, e.do("POST", "/api/enrollment-tokens", e.admin, map[string]any{"uses": 1})).json(t, &tok)
	const rlo = "\u202e"
	events := len(e.auditEvents(""))

	cases := []struct {
		name, method, path, token string
		body                      any
		field                     string
	}{
		{"hostname", "POST", "/api/agent/enroll", "", map[string]any{"enrollmentToken": tok.Token, "hostname": "LT-" + rlo + "2400"}, "hostname"},
		{"owner", "POST", "/api/agent/enroll", "", map[string]any{"enrollmentToken": tok.Token, "hostname": "LT-1", "ownerUpn": "alice" + rlo + "@example.com"}, "ownerUpn"},
		{"serial number", "POST", "/api/agent/enroll", "", map[string]any{"enrollmentToken": tok.Token, "hostname": "LT-1", "serialNumber": "SN" + rlo}, "serialNumber"},
		{"reason of a view", "GET", "/api/devices/security/bitlocker/keys/" + d.ID + "?reason=Forgotten%E2%80%AEPIN", e.admin, nil, "reason"},
		{"reason of a rotation", "POST", "/api/devices/security/bitlocker/keys/" + d.ID + "/rotate", e.admin, map[string]any{"reason": "lost" + rlo}, "reason"},
		{"reason of a retirement", "POST", "/api/devices/" + d.ID + "/retire", e.admin, map[string]any{"reason": "wiped" + rlo}, "reason"},
		{"token name", "POST", "/api/tokens", e.admin, map[string]any{"name": "backup" + rlo}, "name"},
		{"scope tag", "POST", "/api/users", e.admin, map[string]any{"email": "hd@example.com", "role": "helpdesk", "scopeTags": []string{"lab" + rlo}}, "scopeTags"},
		{"mount point", "POST", "/api/agent/report", d.Token, map[string]any{"volumes": []map[string]any{{"volumeId": `\\?\Volume{1}\`, "mountPoint": "C:" + rlo,
			"volumeType": "operatingSystem", "protectionStatus": "on", "encryptionStatus": "fullyEncrypted", "keyProtectors": []any{}}}}, "mountPoint"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.must(http.StatusBadRequest, e.do(c.method, c.path, c.token, c.body))
			if m := r.errorMessage(t); !strings.Contains(m, c.field+": ") || !strings.Contains(m, "U+202E") {
				t.Errorf("message %q does not name %s and the character", m, c.field)
			}
		})
	}
	// Nothing was stored: no device, no disclosure, rotation, retirement, token or user, and the
	// enrollment token was not used up.
	if got := e.auditEvents(""); len(got) != events {
		t.Fatalf("refused requests left %d events: %+v", len(got)-events, got[:len(got)-events])
	}
	var list struct{ Items []struct{ DeviceID string } }
	e.must(200, e.do("GET", "/api/devices", e.admin, nil)).json(t, &list)
	if len(list.Items) != 1 {
		t.Fatalf("devices after refused enrollments: %+v", list.Items)
	}
	e.must(201, e.do("POST", "/api/agent/enroll", "", map[string]any{"enrollmentToken": tok.Token, "hostname": "LT-0043"}))
}

// TestAuditTextEscaped: text from outside that cannot be refused (the path and user agent of a
// request with a bad token) reaches the audit trail with its control and format characters
// escaped, never raw.
func TestAuditTextEscaped(t *testing.T) {
	e := newEnv(t)
	req, err := http.NewRequest("GET", e.srv.URL+"/api/devices/x%0a%1b[31m%e2%80%ae", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer kwt_0123456789abcdef_"+strings.Repeat("A", 43))
	req.Header.Set("User-Agent", "curl/8\u009b2J\u202e") // U+009B is the one-character CSI
	res, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d", res.StatusCode)
	}
	ev := e.auditEvents("action=auth.token&outcome=denied")
	if len(ev) != 1 {
		t.Fatalf("events: %+v", ev)
	}
	if want := `invalid token for GET /api/devices/x\u{A}\u{1B}[31m\u{202E}`; ev[0].Detail != want {
		t.Errorf("detail %q, want %q", ev[0].Detail, want)
	}
	if want := `curl/8\u{9B}2J\u{202E}`; ev[0].UserAgent != want {
		t.Errorf("user agent %q, want %q", ev[0].UserAgent, want)
	}
}
