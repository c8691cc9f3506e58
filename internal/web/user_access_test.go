package web_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/escrow"
)

func TestDisableUserInPortal(t *testing.T) {
	e := newEnv(t)
	admin := e.person(escrow.RoleAdmin, "admin@example.com")
	leaver := e.person(escrow.RoleHelpdesk, "leaver@example.com")
	adminCookie, leaverCookie := e.session(admin.Email), e.session(leaver.Email)
	e.get("/devices", leaverCookie).must(t, http.StatusOK)
	signIn := func(pw string) response {
		return e.post("/signin", "", url.Values{"email": {leaver.Email}, "password": {pw}})
	}
	wrong := signIn("not the password").must(t, http.StatusUnauthorized)

	// Only an admin, and only from the portal's own pages.
	e.post("/users/"+leaver.ID+"/access", leaverCookie, url.Values{"disabled": {"true"}}).must(t, http.StatusForbidden)
	e.do(request{method: http.MethodPost, path: "/users/" + leaver.ID + "/access", cookie: adminCookie, form: url.Values{"disabled": {"true"}},
		headers: map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}}).must(t, http.StatusForbidden)
	e.post("/users/"+leaver.ID+"/access", adminCookie, url.Values{"disabled": {"maybe"}}).must(t, http.StatusBadRequest)

	r := e.post("/users/"+leaver.ID+"/access", adminCookie, url.Values{"disabled": {"true"}}).must(t, http.StatusSeeOther)
	if r.header.Get("Location") != "/users?notice=user-disabled" {
		t.Fatalf("redirect to %q", r.header.Get("Location"))
	}
	ev := e.events(escrow.AuditFilter{Action: escrow.ActionUserDisable, Outcome: string(escrow.OutcomeSuccess)})
	if len(ev) != 1 || ev[0].Outcome != escrow.OutcomeSuccess || ev[0].Actor.ID != admin.ID || ev[0].Source != escrow.SourceAdminPortal {
		t.Fatalf("disable events %+v", ev)
	}

	// The session is gone, and the right password gets the wrong password's answer.
	if r := e.get("/devices", leaverCookie).must(t, http.StatusSeeOther); !strings.HasPrefix(r.header.Get("Location"), "/signin") {
		t.Fatalf("disabled session sent to %q", r.header.Get("Location"))
	}
	refused := signIn(testPassword).must(t, http.StatusUnauthorized)
	if !strings.Contains(refused.body, "The email address or the password is wrong.") || !strings.Contains(wrong.body, "The email address or the password is wrong.") {
		t.Fatalf("refusal page: %s", shortBody(refused.body))
	}
	denied := e.events(escrow.AuditFilter{Action: escrow.ActionSignIn, Outcome: string(escrow.OutcomeDenied)})
	if len(denied) != 2 || denied[1].Detail != "the account is disabled" {
		t.Fatalf("sign-in refusals %+v", denied)
	}
	if r := e.get("/users", adminCookie).must(t, http.StatusOK); !strings.Contains(r.body, "Enable<span class=\"visually-hidden\"> leaver@example.com") {
		t.Fatalf("users page: %s", shortBody(r.body))
	}

	// The last admin cannot be disabled.
	if r := e.post("/users/"+admin.ID+"/access", adminCookie, url.Values{"disabled": {"true"}}).must(t, http.StatusConflict); !strings.Contains(r.body, "last admin") {
		t.Fatalf("disabling the last admin: %s", shortBody(r.body))
	}

	e.post("/users/"+leaver.ID+"/access", adminCookie, url.Values{"disabled": {"false"}}).must(t, http.StatusSeeOther)
	signIn(testPassword).must(t, http.StatusSeeOther)
	if ev := e.events(escrow.AuditFilter{Action: escrow.ActionUserEnable}); len(ev) != 1 || ev[0].Outcome != escrow.OutcomeSuccess {
		t.Fatalf("enable events %+v", ev)
	}
}
