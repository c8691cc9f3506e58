package web_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/oauth2-proxy/mockoidc"
)

var setupOrigin = escrow.Origin{Actor: escrow.Actor{Type: escrow.ActorSystem, ID: "serve"}, Source: escrow.SourceSystem}

// TestSetupWithSingleSignOn: from a setup link, whoever signs on through the identity provider
// becomes the first admin, even with claims that map to no staff role; the link is then used up.
func TestSetupWithSingleSignOn(t *testing.T) {
	p := startProvider(t)
	e := ssoEnv(t, p, escrow.RoleUser)
	tok, err := e.db.CreateSetupLink(context.Background(), setupOrigin, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := browserClient(t)
	res, body := fetch(t, c, e.srv.URL+"/setup?token="+tok)
	if res.StatusCode != http.StatusOK || !strings.Contains(body, `action="/setup/sso"`) {
		t.Fatalf("setup page with single sign-on: %d\n%s", res.StatusCode, shortBody(body))
	}
	// An unverified email is refused as at any sign-on, and the link stays usable.
	p.QueueUser(&mockoidc.MockUser{Subject: "mallory", Email: "mallory@example.com", Groups: []string{"staff"}})
	res, err = c.PostForm(e.srv.URL+"/setup/sso", url.Values{"token": {tok}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode == http.StatusOK || hasSession(c, e.srv.URL) {
		t.Fatalf("an unverified identity finished setup: %d at %s", res.StatusCode, res.Request.URL)
	}

	p.QueueUser(&mockoidc.MockUser{Subject: "ada-sub", Email: "ada@example.com", EmailVerified: true, Groups: []string{"staff"}})
	c = browserClient(t)
	res, err = c.PostForm(e.srv.URL+"/setup/sso", url.Values{"token": {tok}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Request.URL.Path != "/devices" || !hasSession(c, e.srv.URL) {
		t.Fatalf("after setup by single sign-on: %d at %s", res.StatusCode, res.Request.URL)
	}
	u, _, err := e.db.UserCredentials(context.Background(), "ada@example.com")
	if err != nil || u.Role != escrow.RoleAdmin {
		t.Fatalf("the first admin: %+v, %v", u, err)
	}
	if ev := e.events(escrow.AuditFilter{Action: escrow.ActionSetupAdmin}); len(ev) != 1 || ev[0].Actor.ID != u.ID {
		t.Fatalf("setup.admin events: %+v", ev)
	}
	// Used up: a second identity from the same link gets nothing.
	p.QueueUser(&mockoidc.MockUser{Subject: "bea-sub", Email: "bea@example.com", EmailVerified: true})
	c = browserClient(t)
	res, err = c.PostForm(e.srv.URL+"/setup/sso", url.Values{"token": {tok}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound || hasSession(c, e.srv.URL) {
		t.Fatalf("a used setup link: %d at %s", res.StatusCode, res.Request.URL)
	}
}

// TestSetupPassword: the password form refuses two different passwords and a short one,
// keeping the link; then creates the admin and signs them in.
func TestSetupPassword(t *testing.T) {
	e := newEnv(t)
	tok, err := e.db.CreateSetupLink(context.Background(), setupOrigin, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if r := e.get("/signin", ""); !strings.Contains(r.body, `id="setup-help"`) {
		t.Fatal("the sign-in page does not say where the setup link is")
	}
	for _, form := range []url.Values{
		{"token": {tok}, "email": {"ada@example.com"}, "password": {"a long sign-in password"}, "password2": {"another long password"}},
		{"token": {tok}, "email": {"ada@example.com"}, "password": {"short"}, "password2": {"short"}},
		{"token": {tok}, "email": {"\u017fam@example.com"}, "password": {"a long sign-in password"}, "password2": {"a long sign-in password"}},
	} {
		r := e.post("/setup", "", form)
		if r.status != http.StatusBadRequest || !strings.Contains(r.body, `name="token"`) {
			t.Errorf("form %v: %d\n%s", form, r.status, shortBody(r.body))
		}
	}
	r := e.post("/setup", "", url.Values{"token": {tok}, "email": {"ada@example.com"}, "password": {"a long sign-in password"}, "password2": {"a long sign-in password"}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/devices" {
		t.Fatalf("setup: %d to %q", r.status, r.header.Get("Location"))
	}
	if r := e.get("/signin", ""); strings.Contains(r.body, `id="setup-help"`) {
		t.Fatal("the sign-in page still offers setup")
	}
}
