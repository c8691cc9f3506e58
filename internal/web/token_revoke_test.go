package web_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

func TestRevokeTokensInPortal(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	admin := e.person(escrow.RoleAdmin, "admin@example.com")
	e.person(escrow.RoleHelpdesk, "hd@example.com")
	e.person(escrow.RoleAuditor, "auditor@example.com")
	adminCookie := e.session(admin.Email)
	apiTok, err := e.db.CreateAPIToken(ctx, testOrigin, "auditor@example.com", "siem export")
	if err != nil {
		t.Fatal(err)
	}
	enrollTok, err := e.db.CreateEnrollmentToken(ctx, testOrigin, 5, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.AuthenticateAPIToken(ctx, apiTok); err != nil {
		t.Fatalf("the new API token does not authenticate: %v", err)
	}
	apiPath, enrollPath := "/tokens/api/"+apiTok.ID+"/revoke", "/tokens/enrollment/"+enrollTok.ID+"/revoke"

	// Helpdesk and auditors may neither see the tokens nor revoke one; each refusal is audited.
	for _, email := range []string{"hd@example.com", "auditor@example.com"} {
		c := e.session(email)
		e.get("/tokens", c).must(t, http.StatusForbidden)
		e.post(apiPath, c, nil).must(t, http.StatusForbidden)
		e.post(enrollPath, c, nil).must(t, http.StatusForbidden)
	}
	for _, action := range []string{escrow.ActionTokenCreate, escrow.ActionTokenRevoke, escrow.ActionEnrollTokenRevoke} {
		if ev := e.events(escrow.AuditFilter{Action: action, Outcome: string(escrow.OutcomeDenied)}); len(ev) != 2 {
			t.Errorf("denied %s events %+v", action, ev)
		}
	}

	// An admin sees both tokens and a Revoke button for each, never a secret.
	page := e.get("/tokens", adminCookie).must(t, http.StatusOK)
	for _, want := range []string{"siem export", "auditor@example.com", enrollTok.ID, "<td>5</td>", `action="` + apiPath + `"`, `action="` + enrollPath + `"`} {
		if !strings.Contains(page.body, want) {
			t.Errorf("tokens page lacks %q", want)
		}
	}
	for _, secret := range []string{apiTok.String(), apiTok.Secret, enrollTok.Token.String(), enrollTok.Token.Secret, "kwt_", "kwe_"} {
		if strings.Contains(page.body, secret) {
			t.Fatalf("tokens page shows a secret: %q", secret)
		}
	}

	// Only the portal's own pages may post, and an unknown token is a 404.
	for _, path := range []string{apiPath, enrollPath} {
		e.do(request{method: http.MethodPost, path: path, cookie: adminCookie,
			headers: map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}}).must(t, http.StatusForbidden)
	}
	if _, err := e.db.AuthenticateAPIToken(ctx, apiTok); err != nil {
		t.Fatalf("a cross-origin post revoked the API token: %v", err)
	}
	e.post("/tokens/api/nosuchtoken/revoke", adminCookie, nil).must(t, http.StatusNotFound)
	e.post("/tokens/enrollment/nosuchtoken/revoke", adminCookie, nil).must(t, http.StatusNotFound)

	for _, c := range []struct {
		path, notice, text, action string
	}{
		{apiPath, "api-token-revoked", "API token revoked", escrow.ActionTokenRevoke},
		{enrollPath, "enrollment-token-revoked", "Enrollment token revoked", escrow.ActionEnrollTokenRevoke},
	} {
		r := e.post(c.path, adminCookie, nil).must(t, http.StatusSeeOther)
		if r.header.Get("Location") != "/tokens?notice="+c.notice {
			t.Fatalf("%s: redirect to %q", c.path, r.header.Get("Location"))
		}
		if page := e.get(r.header.Get("Location"), adminCookie).must(t, http.StatusOK); !strings.Contains(page.body, c.text) {
			t.Errorf("%s: no notice: %s", c.path, shortBody(page.body))
		}
		ev := e.events(escrow.AuditFilter{Action: c.action, Outcome: string(escrow.OutcomeSuccess)})
		if len(ev) != 1 || ev[0].Actor.ID != admin.ID || ev[0].Source != escrow.SourceAdminPortal {
			t.Fatalf("%s events %+v", c.action, ev)
		}
		if r := e.post(c.path, adminCookie, nil).must(t, http.StatusConflict); !strings.Contains(r.body, "already revoked") {
			t.Errorf("%s twice: %s", c.path, shortBody(r.body))
		}
	}

	// The API token is refused, the enrollment token enrolls nothing, and neither offers Revoke.
	if _, err := e.db.AuthenticateAPIToken(ctx, apiTok); escrow.ErrorCode(err) != escrow.CodeUnauthorized {
		t.Fatalf("the revoked API token authenticates: %v", err)
	}
	e.agent(http.MethodPost, "/api/agent/enroll", "", map[string]any{"enrollmentToken": enrollTok.Token.String(), "hostname": "LT-LATE",
		"serialNumber": "SN-LATE", "osVersion": "10.0.26100"}, http.StatusUnauthorized, nil)
	page = e.get("/tokens", adminCookie).must(t, http.StatusOK)
	if strings.Contains(page.body, `action="`+apiPath+`"`) || strings.Contains(page.body, `action="`+enrollPath+`"`) || strings.Count(page.body, "Revoked</span>") != 2 {
		t.Fatalf("tokens page after revoking: %s", shortBody(page.body))
	}
}
