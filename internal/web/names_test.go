package web_test

import (
	"context"
	"html"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/oauth2-proxy/mockoidc"
)

// TestPortalLookAlikeNames: the portal refuses a person whose name is a look-alike, naming the
// field, and single sign-on refuses an identity whose verified email is one.
func TestPortalLookAlikeNames(t *testing.T) {
	p := startProvider(t)
	e := ssoEnv(t, p, escrow.RoleUser)
	e.person(escrow.RoleAdmin, "admin@example.com")
	admin := e.session("admin@example.com")
	e.person(escrow.RoleUser, "sam@example.com")

	r := e.post("/users", admin, url.Values{"email": {"\u017fam@example.com"}, "role": {"user"}}).must(t, http.StatusBadRequest)
	if !strings.Contains(html.UnescapeString(r.body), "email: only letters, digits and ASCII punctuation") {
		t.Fatalf("the users page does not say what is wrong:\n%s", shortBody(r.body))
	}
	res, body, session := signOn(t, e, p, &mockoidc.MockUser{Subject: "s-sub", Email: "\u017fam@example.com", EmailVerified: true})
	if res.StatusCode != http.StatusUnauthorized || session || !strings.Contains(body, "cannot use") {
		t.Fatalf("single sign-on with a look-alike email: %d, session %v\n%s", res.StatusCode, session, shortBody(body))
	}
	users, err := e.db.ListUsers(context.Background())
	if err != nil || len(users) != 2 {
		t.Fatalf("people after refusals: %+v, %v", users, err)
	}
}

// TestPortalAuditTextEscaped: what a provider or a browser sends that cannot be refused reaches
// the audit trail with control and format characters escaped.
func TestPortalAuditTextEscaped(t *testing.T) {
	p := startProvider(t)
	e := ssoEnv(t, p, escrow.RoleUser)
	r := e.do(request{path: "/signin/sso/callback?error=access_denied%1b%5b2J%e2%80%ae", headers: map[string]string{"User-Agent": "Mozilla/5.0\u009b2J\u202e"}})
	if r.status != http.StatusUnauthorized {
		t.Fatalf("callback with an error: %d", r.status)
	}
	ev := e.events(escrow.AuditFilter{Action: escrow.ActionSignIn, Outcome: "denied"})
	if len(ev) != 1 {
		t.Fatalf("events: %+v", ev)
	}
	if want := `single sign-on: the identity provider answered access_denied\u{1B}[2J\u{202E}`; ev[0].Detail != want {
		t.Errorf("detail %q, want %q", ev[0].Detail, want)
	}
	if want := `Mozilla/5.0\u{9B}2J\u{202E}`; ev[0].UserAgent != want {
		t.Errorf("user agent %q, want %q", ev[0].UserAgent, want)
	}
}
