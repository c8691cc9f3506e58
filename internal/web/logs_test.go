package web_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/escrow"
)

// TestNoSecretsInLogs drives every path that handles a secret (sign-in with a password, a
// failed sign-in, views of keys in the admin portal and in self-service, a token shown once)
// and then reads everything the server logged.
func TestNoSecretsInLogs(t *testing.T) {
	s := seed(t)
	key := s.aliceLaptop.Keys[0]
	signin := s.post("/signin", "", url.Values{"email": {"admin@example.com"}, "password": {testPassword}}).must(t, http.StatusSeeOther)
	session := sessionCookie(t, signin).Value
	s.post("/signin", "", url.Values{"email": {"admin@example.com"}, "password": {"a wrong password for the log test"}}).must(t, http.StatusUnauthorized)
	// A password typed into the email field.
	s.post("/signin", "", url.Values{"email": {"Typed-Into-The-Email-Field"}, "password": {"x"}}).must(t, http.StatusUnauthorized)
	s.post("/devices/"+s.aliceLaptop.ID+"/keys", session, url.Values{"reason": {"other"}, "details": {"reason text for the log test"}}).must(t, http.StatusOK)
	s.post("/my/key", s.alice, url.Values{"keyId": {key.KeyID[:8]}, "reason": {"firmware"}}).must(t, http.StatusOK)
	tok := s.post("/tokens/api", session, url.Values{"email": {"auditor@example.com"}}).must(t, http.StatusCreated)
	s.get("/devices?q="+key.KeyID[:8], session).must(t, http.StatusOK)
	s.get("/nothing/here", session).must(t, http.StatusNotFound)

	logs := s.logs.String()
	if !strings.Contains(logs, "/my/key") {
		t.Fatalf("the log test saw no request log:\n%s", logs)
	}
	secrets := map[string]string{
		"recovery password":                 key.Password,
		"recovery password without hyphens": strings.ReplaceAll(key.Password, "-", ""),
		"password":                          testPassword,
		"wrong password":                    "a wrong password for the log test",
		"session token":                     session,
		"reason":                            "reason text for the log test",
		"password in the email field":       "Typed-Into-The-Email-Field",
	}
	if i := strings.Index(tok.body, "kwt_"); i >= 0 {
		secrets["API token"] = tok.body[i : i+64]
	}
	for _, b := range strings.Split(key.Password, "-")[:3] {
		secrets["block "+b] = "\"" + b // a block as a value on its own
	}
	for what, secret := range secrets {
		if strings.Contains(logs, secret) {
			t.Errorf("the log holds the %s", what)
		}
	}
	// Nor does the audit trail hold material: reasons yes, keys never.
	for _, ev := range s.events(escrow.AuditFilter{}) {
		all := ev.Detail + ev.Reason + ev.UserAgent + ev.Actor.Name
		if strings.Contains(all, key.Password) || strings.Contains(all, testPassword) || strings.Contains(all, "Typed-Into-The-Email-Field") {
			t.Fatalf("audit event %d holds a secret", ev.Seq)
		}
	}
}
