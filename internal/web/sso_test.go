package web_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/web"
	"github.com/keyward/keyward/internal/web/browsertest"
	"github.com/oauth2-proxy/mockoidc"
)

// provider is a real OpenID provider on loopback (mockoidc): discovery, signed ID tokens,
// PKCE checked at the token endpoint. forgeNonce makes it put another nonce into the next ID
// tokens, as a provider answering someone else's sign-in would.
type provider struct {
	*mockoidc.MockOIDC
	forgeNonce atomic.Bool
}

func startProvider(t *testing.T) *provider {
	t.Helper()
	m, err := mockoidc.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &provider{MockOIDC: m}
	err = m.AddMiddleware(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if p.forgeNonce.Load() && strings.HasSuffix(r.URL.Path, mockoidc.AuthorizationEndpoint) {
				q := r.URL.Query()
				q.Set("nonce", "a-nonce-this-sign-in-never-sent")
				r.URL.RawQuery = q.Encode()
			}
			next.ServeHTTP(w, r)
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ln, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return p
}

func ssoEnv(t *testing.T, p *provider, defaultRole escrow.Role) *env {
	t.Helper()
	cfg := p.Config()
	return newEnv(t, func(c *web.Config, serverURL string) {
		c.SSO = &web.SSOConfig{
			Issuer: cfg.Issuer, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
			RedirectURL: serverURL + "/signin/sso/callback",
			Scopes:      []string{"openid", "email", "profile", "groups"},
			RoleClaim:   "groups",
			RoleMap:     map[string]escrow.Role{"kw-admins": escrow.RoleAdmin, "kw-helpdesk": escrow.RoleHelpdesk, "kw-auditors": escrow.RoleAuditor},
			DefaultRole: defaultRole,
		}
	})
}

// browserClient is an HTTP client with a cookie jar, following redirects, like a browser
// going through the sign-in without a person clicking.
func browserClient(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 20 * time.Second}
}

func fetch(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	res, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(b)
}

func hasSession(c *http.Client, base string) bool {
	u, _ := url.Parse(base)
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == "keyward_session" && ck.Value != "" {
			return true
		}
	}
	return false
}

func TestSSO(t *testing.T) {
	p := startProvider(t)
	e := ssoEnv(t, p, escrow.RoleUser)
	// Another admin, so that the claims may take the admin role away from Ada.
	e.person(escrow.RoleAdmin, "root@example.com")

	t.Run("first sign-in creates the person with the role their group maps to", func(t *testing.T) {
		p.QueueUser(&mockoidc.MockUser{Subject: "u1", Email: "Ada@Example.com", EmailVerified: true, Groups: []string{"staff", "kw-admins"}})
		c := browserClient(t)
		res, body := fetch(t, c, e.srv.URL+"/signin/sso?next=/audit")
		if res.StatusCode != http.StatusOK || res.Request.URL.Path != "/audit" || !strings.Contains(body, "ada@example.com") {
			t.Fatalf("after single sign-on: %d at %s\n%s", res.StatusCode, res.Request.URL, shortBody(body))
		}
		u, _, err := e.db.UserCredentials(context.Background(), "ada@example.com")
		if err != nil || u.Role != escrow.RoleAdmin {
			t.Fatalf("user after single sign-on: %+v, %v", u, err)
		}
		ev := e.events(escrow.AuditFilter{Action: "auth.signin", Outcome: "success"})
		if len(ev) != 1 || ev[0].Actor.ID != u.ID || !strings.Contains(ev[0].Detail, "single sign-on") {
			t.Fatalf("sign-in events: %+v", ev)
		}
	})

	t.Run("the next sign-in takes the role from the claims again", func(t *testing.T) {
		p.QueueUser(&mockoidc.MockUser{Subject: "u1", Email: "ada@example.com", EmailVerified: true, Groups: []string{"kw-helpdesk"}})
		c := browserClient(t)
		res, _ := fetch(t, c, e.srv.URL+"/signin/sso")
		if res.Request.URL.Path != "/devices" {
			t.Fatalf("helpdesk landed on %s", res.Request.URL)
		}
		u, _, err := e.db.UserCredentials(context.Background(), "ada@example.com")
		if err != nil || u.Role != escrow.RoleHelpdesk {
			t.Fatalf("role after the second sign-in: %+v, %v", u, err)
		}
		if ev := e.events(escrow.AuditFilter{Action: "user.role"}); len(ev) != 1 || !strings.Contains(ev[0].Detail, "admin -> helpdesk") {
			t.Fatalf("role change events: %+v", ev)
		}
	})

	t.Run("no mapped group gives the default role", func(t *testing.T) {
		p.QueueUser(&mockoidc.MockUser{Subject: "u2", Email: "bea@example.com", EmailVerified: true, Groups: []string{"staff"}})
		c := browserClient(t)
		res, _ := fetch(t, c, e.srv.URL+"/signin/sso")
		if res.Request.URL.Path != "/my" {
			t.Fatalf("a user landed on %s", res.Request.URL)
		}
	})

	t.Run("a forged state is refused", func(t *testing.T) {
		p.QueueUser(&mockoidc.MockUser{Subject: "u3", Email: "mallory@example.com", EmailVerified: true, Groups: []string{"kw-admins"}})
		c := browserClient(t)
		// Stop at the provider's answer, before the callback.
		c.CheckRedirect = func(r *http.Request, _ []*http.Request) error {
			if r.URL.Path == "/signin/sso/callback" {
				return http.ErrUseLastResponse
			}
			return nil
		}
		res, _ := fetch(t, c, e.srv.URL+"/signin/sso")
		back, err := url.Parse(res.Header.Get("Location"))
		if err != nil || back.Query().Get("code") == "" || back.Query().Get("state") == "" {
			t.Fatalf("the provider did not send the browser back with a code: %v", res.Header)
		}
		forged := *back
		q := forged.Query()
		q.Set("state", "forged-state-forged-state-forged-state-abc")
		forged.RawQuery = q.Encode()
		c.CheckRedirect = nil
		res, body := fetch(t, c, forged.String())
		if res.StatusCode != http.StatusUnauthorized || hasSession(c, e.srv.URL) {
			t.Fatalf("forged state: %d, session %v\n%s", res.StatusCode, hasSession(c, e.srv.URL), shortBody(body))
		}
		// The genuine callback still works once, and not twice.
		res, _ = fetch(t, c, back.String())
		if res.StatusCode != http.StatusOK || !hasSession(c, e.srv.URL) {
			t.Fatalf("genuine callback after a forged one: %d", res.StatusCode)
		}
		// A replay, even from a browser holding the state's cookie, finds the state used up.
		replay := browserClient(t)
		base, _ := url.Parse(e.srv.URL)
		replay.Jar.SetCookies(base, []*http.Cookie{{Name: "keyward_sso", Value: back.Query().Get("state"), Path: "/signin/sso"}})
		res, body = fetch(t, replay, back.String())
		if res.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "already used") {
			t.Fatalf("a replayed callback: %d\n%s", res.StatusCode, shortBody(body))
		}
		denied := e.events(escrow.AuditFilter{Action: "auth.signin", Outcome: "denied"})
		if len(denied) < 2 || !strings.Contains(denied[0].Detail, "state") {
			t.Fatalf("refused callbacks in the audit trail: %+v", denied)
		}
	})

	t.Run("a disabled person is refused whatever the provider says", func(t *testing.T) {
		u, _, err := e.db.UserCredentials(context.Background(), "ada@example.com")
		if err != nil {
			t.Fatal(err)
		}
		disable, enable := true, false
		if _, err := e.db.UpdateUser(context.Background(), testOrigin, u.ID, escrow.UserChange{Disabled: &disable}); err != nil {
			t.Fatal(err)
		}
		p.QueueUser(&mockoidc.MockUser{Subject: "u1", Email: "ada@example.com", EmailVerified: true, Groups: []string{"kw-admins"}})
		c := browserClient(t)
		res, body := fetch(t, c, e.srv.URL+"/signin/sso")
		if res.StatusCode != http.StatusUnauthorized || hasSession(c, e.srv.URL) || !strings.Contains(body, "no access to Keyward") {
			t.Fatalf("disabled: %d, session %v\n%s", res.StatusCode, hasSession(c, e.srv.URL), shortBody(body))
		}
		if u, _, _ = e.db.UserCredentials(context.Background(), "ada@example.com"); u.Role != escrow.RoleHelpdesk || !u.Disabled() {
			t.Fatalf("a refused sign-in changed the user: %+v", u)
		}
		if _, err := e.db.UpdateUser(context.Background(), testOrigin, u.ID, escrow.UserChange{Disabled: &enable}); err != nil {
			t.Fatal(err)
		}
		p.QueueUser(&mockoidc.MockUser{Subject: "u1", Email: "ada@example.com", EmailVerified: true, Groups: []string{"kw-helpdesk"}})
		c = browserClient(t)
		if res, _ := fetch(t, c, e.srv.URL+"/signin/sso"); res.StatusCode != http.StatusOK || !hasSession(c, e.srv.URL) {
			t.Fatalf("enabled again: %d", res.StatusCode)
		}
	})

	t.Run("an ID token with another nonce is refused", func(t *testing.T) {
		p.QueueUser(&mockoidc.MockUser{Subject: "u4", Email: "oscar@example.com", EmailVerified: true, Groups: []string{"kw-admins"}})
		p.forgeNonce.Store(true)
		defer p.forgeNonce.Store(false)
		c := browserClient(t)
		res, body := fetch(t, c, e.srv.URL+"/signin/sso")
		if res.StatusCode != http.StatusUnauthorized || hasSession(c, e.srv.URL) || !strings.Contains(body, "does not belong to this sign-in") {
			t.Fatalf("wrong nonce: %d, session %v\n%s", res.StatusCode, hasSession(c, e.srv.URL), shortBody(body))
		}
		if _, _, err := e.db.UserCredentials(context.Background(), "oscar@example.com"); escrow.ErrorCode(err) != escrow.CodeNotFound {
			t.Fatalf("a refused sign-in created the user: %v", err)
		}
		denied := e.events(escrow.AuditFilter{Action: "auth.signin", Outcome: "denied"})
		if !strings.Contains(denied[len(denied)-1].Detail, "nonce") {
			t.Fatalf("nonce refusal not audited: %+v", denied[len(denied)-1])
		}
	})

	t.Run("without a default role, people in no mapped group are refused", func(t *testing.T) {
		strict := ssoEnv(t, p, "")
		p.QueueUser(&mockoidc.MockUser{Subject: "u5", Email: "zed@example.com", EmailVerified: true, Groups: []string{"staff"}})
		c := browserClient(t)
		res, body := fetch(t, c, strict.srv.URL+"/signin/sso")
		if res.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "no access") {
			t.Fatalf("no role: %d\n%s", res.StatusCode, shortBody(body))
		}
	})
}

func TestParseRoleMap(t *testing.T) {
	m, err := web.ParseRoleMap("kw-admins=admin, kw-helpdesk=helpdesk,kw-auditors=auditor,,everyone=user")
	if err != nil || len(m) != 4 || m["kw-admins"] != escrow.RoleAdmin || m["everyone"] != escrow.RoleUser {
		t.Fatalf("ParseRoleMap = %v, %v", m, err)
	}
	for _, bad := range []string{"kw-admins", "kw-admins=root", "=admin", "a=admin,b"} {
		if _, err := web.ParseRoleMap(bad); err == nil {
			t.Errorf("ParseRoleMap(%q) accepted", bad)
		}
	}
}

func TestSSOConfigRefused(t *testing.T) {
	for name, cfg := range map[string]web.SSOConfig{
		"no issuer":                     {ClientID: "c", RedirectURL: "https://k.example/signin/sso/callback"},
		"plain http to another host":    {Issuer: "http://idp.example", ClientID: "c", RedirectURL: "https://k.example/signin/sso/callback"},
		"no redirect and no public URL": {Issuer: "https://idp.example", ClientID: "c"},
		"redirect elsewhere":            {Issuer: "https://idp.example", ClientID: "c", RedirectURL: "https://k.example/other"},
		"bad default role":              {Issuer: "https://idp.example", ClientID: "c", RedirectURL: "https://k.example/signin/sso/callback", DefaultRole: "root"},
	} {
		t.Run(name, func(t *testing.T) {
			c := cfg
			if _, err := web.New(nil, nil, web.Config{SSO: &c}); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// TestBrowserSSO signs in through the provider in Chromium: the button, the provider, the
// callback, and the admin's pages with the role the group maps to.
func TestBrowserSSO(t *testing.T) {
	b := browsertest.Start(t)
	p := startProvider(t)
	e := ssoEnv(t, p, escrow.RoleUser)
	p.QueueUser(&mockoidc.MockUser{Subject: "u9", Email: "grace@example.com", EmailVerified: true, Groups: []string{"kw-auditors"}})
	ctx := b.Tab(t)
	browserRun(t, ctx,
		chromedp.Navigate(e.srv.URL+"/signin"),
		chromedp.Click(chromedp.CSS(`a[href^="/signin/sso"]`)),
		waitView("devices"),
	)
	account := evaluate[string](t, ctx, `document.querySelector(".account").textContent`)
	if !strings.Contains(account, "grace@example.com") || !strings.Contains(account, "Auditor") {
		t.Fatalf("after single sign-on the page shows %q", account)
	}
	browserRun(t, ctx, chromedp.Navigate(e.srv.URL+"/audit"), waitView("audit"))
}
