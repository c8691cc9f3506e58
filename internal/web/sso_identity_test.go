package web_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/keyward/keyward/internal/bitlockertest"
	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/web"
	"github.com/oauth2-proxy/mockoidc"
)

// claimsUser is a provider user whose ID token carries exactly the extra claims given, for
// claims mockoidc's own user cannot send (email_verified as the string "true").
type claimsUser struct {
	sub   string
	extra map[string]any
}

func (u claimsUser) ID() string                        { return u.sub }
func (u claimsUser) Userinfo([]string) ([]byte, error) { return []byte(`{"sub":"` + u.sub + `"}`), nil }
func (u claimsUser) Claims(_ []string, base *mockoidc.IDTokenClaims) (jwt.Claims, error) {
	return claimsWith{base, u.extra}, nil
}

type claimsWith struct {
	*mockoidc.IDTokenClaims
	extra map[string]any
}

func (c claimsWith) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(c.IDTokenClaims)
	if err != nil {
		return nil, err
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for k, v := range c.extra {
		m[k] = v
	}
	return json.Marshal(m)
}

const unverifiedMessage = "your identity provider did not confirm your email address"

// signOn runs a whole single sign-on in a fresh browser and answers the final page and whether
// the browser holds a session.
func signOn(t *testing.T, e *env, p *provider, u mockoidc.User) (*http.Response, string, bool) {
	t.Helper()
	p.QueueUser(u)
	c := browserClient(t)
	res, body := fetch(t, c, e.srv.URL+"/signin/sso")
	return res, body, hasSession(c, e.srv.URL)
}

// TestSSOAccountTakeover replays the attacks on linking by email: a provider user who merely
// claims someone's address (unverified, in another case, or in preferred_username) must not
// become that person, and a person with a local password is never linked without an admin.
func TestSSOAccountTakeover(t *testing.T) {
	p := startProvider(t)
	e := ssoEnv(t, p, escrow.RoleUser)
	admin := e.person(escrow.RoleAdmin, "admin@example.com")
	alice := e.person(escrow.RoleUser, "alice@example.com")
	e.enroll("LT-ALICE", "alice@example.com", bitlockertest.Samples(t)[0])

	attacks := []struct {
		name    string
		user    mockoidc.User
		message string
	}{
		{"no email_verified claim", &mockoidc.MockUser{Subject: "mallory", Email: "alice@example.com"}, unverifiedMessage},
		{"email_verified as a string", claimsUser{"mallory-2", map[string]any{"email": "alice@example.com", "email_verified": "true"}}, unverifiedMessage},
		{"no email, preferred_username", &mockoidc.MockUser{Subject: "mallory-3", PreferredUsername: "alice@example.com"}, unverifiedMessage},
		{"unverified admin address in another case", &mockoidc.MockUser{Subject: "mallory-4", Email: "ADMIN@example.com"}, unverifiedMessage},
		{"verified address of a password account", &mockoidc.MockUser{Subject: "mallory-5", Email: "Alice@Example.com", EmailVerified: true}, "Ask an administrator to link it"},
		{"verified address of the admin", &mockoidc.MockUser{Subject: "mallory-6", Email: "admin@example.com", EmailVerified: true, Groups: []string{"kw-admins"}}, "Ask an administrator to link it"},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			before := len(e.events(escrow.AuditFilter{Action: escrow.ActionSignIn, Outcome: "denied"}))
			res, body, session := signOn(t, e, p, a.user)
			if res.StatusCode != http.StatusUnauthorized || session || !strings.Contains(body, a.message) {
				t.Fatalf("%d, session %v\n%s", res.StatusCode, session, shortBody(body))
			}
			denied := e.events(escrow.AuditFilter{Action: escrow.ActionSignIn, Outcome: "denied"})
			if len(denied) != before+1 || !strings.HasPrefix(denied[len(denied)-1].Detail, "single sign-on: ") {
				t.Fatalf("refusal not audited: %+v", denied[before:])
			}
		})
	}
	users, err := e.db.ListUsers(context.Background())
	if err != nil || len(users) != 2 {
		t.Fatalf("refused sign-ons made people: %+v, %v", users, err)
	}
	for _, u := range []escrow.User{admin, alice} {
		if got, hash, err := e.db.UserCredentials(context.Background(), u.Email); err != nil || hash == "" || got.Role != u.Role {
			t.Fatalf("%s after the attacks: %+v, password kept %v, %v", u.Email, got, hash != "", err)
		}
	}

	t.Run("an admin allows the link: the next verified sign-on links and removes the password", func(t *testing.T) {
		if _, err := e.db.AllowSSOLink(context.Background(), testOrigin, "alice@example.com"); err != nil {
			t.Fatal(err)
		}
		res, body, session := signOn(t, e, p, &mockoidc.MockUser{Subject: "alice-sub", Email: "alice@example.com", EmailVerified: true})
		if res.StatusCode != http.StatusOK || !session || res.Request.URL.Path != "/my" {
			t.Fatalf("%d at %s, session %v\n%s", res.StatusCode, res.Request.URL, session, shortBody(body))
		}
		got, hash, err := e.db.UserCredentials(context.Background(), "alice@example.com")
		if err != nil || got.ID != alice.ID || hash != "" {
			t.Fatalf("alice after the link: %+v, password kept %v, %v", got, hash != "", err)
		}
		ev := e.events(escrow.AuditFilter{Action: escrow.ActionUserSSOLink})
		if len(ev) != 1 || ev[0].Actor.ID != alice.ID || !strings.Contains(ev[0].Detail, "alice-sub") || !strings.Contains(ev[0].Detail, "password removed") {
			t.Fatalf("link events: %+v", ev)
		}
	})

	t.Run("later sign-ons find the person by issuer and subject only", func(t *testing.T) {
		// The same identity with another address is still alice...
		res, _, session := signOn(t, e, p, &mockoidc.MockUser{Subject: "alice-sub", Email: "someone.else@example.com"})
		if res.StatusCode != http.StatusOK || !session || res.Request.URL.Path != "/my" {
			t.Fatalf("alice with another email claim: %d at %s", res.StatusCode, res.Request.URL)
		}
		// ...and another identity with alice's verified address is not.
		res, body, session := signOn(t, e, p, &mockoidc.MockUser{Subject: "mallory-7", Email: "alice@example.com", EmailVerified: true})
		if res.StatusCode != http.StatusUnauthorized || session {
			t.Fatalf("another identity with alice's address: %d, session %v\n%s", res.StatusCode, session, shortBody(body))
		}
	})
}

// TestSSOPreProvisioned: a person added without a password (keyward users add) is linked at
// their first sign-on with a verified email, keeping the role an admin gave them when the token
// carries no role claim.
func TestSSOPreProvisioned(t *testing.T) {
	p := startProvider(t)
	e := ssoEnv(t, p, escrow.RoleUser)
	bob, err := e.db.CreateUser(context.Background(), testOrigin, escrow.NewUser{Email: "bob@example.com", Role: escrow.RoleHelpdesk})
	if err != nil {
		t.Fatal(err)
	}
	res, body, session := signOn(t, e, p, &mockoidc.MockUser{Subject: "bob-sub", Email: "BOB@example.com"})
	if res.StatusCode != http.StatusUnauthorized || session || !strings.Contains(body, unverifiedMessage) {
		t.Fatalf("unverified: %d, session %v\n%s", res.StatusCode, session, shortBody(body))
	}
	res, body, session = signOn(t, e, p, &mockoidc.MockUser{Subject: "bob-sub", Email: "BOB@example.com", EmailVerified: true})
	if res.StatusCode != http.StatusOK || !session || res.Request.URL.Path != "/devices" {
		t.Fatalf("verified: %d at %s, session %v\n%s", res.StatusCode, res.Request.URL, session, shortBody(body))
	}
	got, _, err := e.db.UserCredentials(context.Background(), "bob@example.com")
	if err != nil || got.ID != bob.ID || got.Role != escrow.RoleHelpdesk {
		t.Fatalf("bob after linking: %+v, %v", got, err)
	}
}

// TestSSORoleRules: a token without a role claim leaves the role as it is, and the claims never
// demote the last enabled admin (the event says why); the default scopes ask for groups.
func TestSSORoleRules(t *testing.T) {
	p := startProvider(t)
	e := ssoEnv(t, p, escrow.RoleUser)
	res, _, _ := signOn(t, e, p, &mockoidc.MockUser{Subject: "root", Email: "root@example.com", EmailVerified: true, Groups: []string{"kw-admins"}})
	if res.StatusCode != http.StatusOK {
		t.Fatalf("first admin: %d", res.StatusCode)
	}
	role := func() escrow.Role {
		u, _, err := e.db.UserCredentials(context.Background(), "root@example.com")
		if err != nil {
			t.Fatal(err)
		}
		return u.Role
	}

	// No groups claim at all (mockoidc leaves an empty list out): the admin stays admin.
	res, _, _ = signOn(t, e, p, &mockoidc.MockUser{Subject: "root", Email: "root@example.com", EmailVerified: true})
	if res.StatusCode != http.StatusOK || res.Request.URL.Path != "/devices" || role() != escrow.RoleAdmin {
		t.Fatalf("without a role claim: %d at %s, role %s", res.StatusCode, res.Request.URL, role())
	}
	if ev := e.events(escrow.AuditFilter{Action: escrow.ActionUserRole}); len(ev) != 0 {
		t.Fatalf("role events without a role claim: %+v", ev)
	}

	// Groups that map to user: the last enabled admin is kept, and the refusal is recorded.
	res, _, _ = signOn(t, e, p, &mockoidc.MockUser{Subject: "root", Email: "root@example.com", EmailVerified: true, Groups: []string{"staff"}})
	if res.StatusCode != http.StatusOK || res.Request.URL.Path != "/devices" || role() != escrow.RoleAdmin {
		t.Fatalf("the last admin with a user claim: %d at %s, role %s", res.StatusCode, res.Request.URL, role())
	}
	ev := e.events(escrow.AuditFilter{Action: escrow.ActionUserRole})
	if len(ev) != 1 || ev[0].Outcome != escrow.OutcomeDenied || !strings.Contains(ev[0].Detail, "last enabled admin") {
		t.Fatalf("refused demotion: %+v", ev)
	}

	// With a second admin, the claims do demote.
	e.person(escrow.RoleAdmin, "second@example.com")
	signOn(t, e, p, &mockoidc.MockUser{Subject: "root", Email: "root@example.com", EmailVerified: true, Groups: []string{"staff"}})
	if role() != escrow.RoleUser {
		t.Fatalf("demotion with another admin: role %s", role())
	}

	t.Run("the default scopes ask for groups", func(t *testing.T) {
		cfg := p.Config()
		d := newEnv(t, func(c *web.Config, serverURL string) {
			c.SSO = &web.SSOConfig{Issuer: cfg.Issuer, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, RedirectURL: serverURL + "/signin/sso/callback",
				RoleMap: map[string]escrow.Role{"kw-admins": escrow.RoleAdmin}, DefaultRole: escrow.RoleUser}
		})
		res := d.get("/signin/sso", "")
		to, err := url.Parse(res.header.Get("Location"))
		if res.status != http.StatusSeeOther || err != nil {
			t.Fatalf("start: %d %v", res.status, err)
		}
		if scopes := strings.Fields(to.Query().Get("scope")); len(scopes) != 4 || scopes[3] != "groups" {
			t.Fatalf("scopes asked for: %q", to.Query().Get("scope"))
		}
	})
}
