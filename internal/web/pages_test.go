package web_test

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/web"
)

// seeded is a small installation: one of each role and two people's laptops.
type seeded struct {
	*env
	admin, helpdesk, auditor, alice, bob string // session cookies
	aliceLaptop, bobLaptop               device
}

func seed(t *testing.T) *seeded {
	t.Helper()
	e := newEnv(t)
	for _, p := range []struct {
		role  escrow.Role
		email string
	}{{escrow.RoleAdmin, "admin@example.com"}, {escrow.RoleHelpdesk, "helpdesk@example.com"}, {escrow.RoleAuditor, "auditor@example.com"},
		{escrow.RoleUser, "alice@example.com"}, {escrow.RoleUser, "bob@example.com"}} {
		e.person(p.role, p.email)
	}
	ks := samples(t, 2)
	s := &seeded{env: e}
	s.aliceLaptop = e.enroll("LT-ALICE", "Alice@Example.com", ks[0])
	s.bobLaptop = e.enroll("LT-BOB", "bob@example.com", ks[1])
	s.admin, s.helpdesk, s.auditor = e.session("admin@example.com"), e.session("helpdesk@example.com"), e.session("auditor@example.com")
	s.alice, s.bob = e.session("alice@example.com"), e.session("bob@example.com")
	return s
}

func TestPagesRender(t *testing.T) {
	s := seed(t)
	id := s.aliceLaptop.ID
	for _, path := range []string{"/devices", "/devices?q=LT-", "/devices?status=escrowed", "/devices?status=retired", "/devices/" + id, "/devices/" + id + "/security",
		"/devices/" + id + "/rotate", "/audit", "/audit?action=key.read&source=admin_portal&since=2026-01-01&until=2026-12-31",
		"/reports/escrow", "/settings", "/users", "/tokens", "/my"} {
		t.Run(path, func(t *testing.T) {
			r := s.get(path, s.admin).must(t, http.StatusOK)
			assertSafePage(t, r)
		})
	}
	r := s.get("/signin", "").must(t, http.StatusOK)
	assertSafePage(t, r)
	if !strings.Contains(r.body, `name="password"`) {
		t.Fatal("the sign-in page has no password field")
	}
}

var (
	scriptTag   = regexp.MustCompile(`(?is)<script\b([^>]*)>(.*?)</script\s*>`)
	inlineStyle = regexp.MustCompile(`(?i)<style\b|\sstyle\s*=`)
	handlerAttr = regexp.MustCompile(`(?i)<[^>]*\son[a-z]+\s*=`)
	externalRef = regexp.MustCompile(`(?i)\s(?:src|href|action)\s*=\s*"(?:https?:)?//`)
	tagRe       = regexp.MustCompile(`(?s)<(input|select|textarea)\b([^>]*)>`)
	idAttr      = regexp.MustCompile(`\sid="([^"]+)"`)
	typeHidden  = regexp.MustCompile(`\stype="hidden"`)
)

// assertSafePage checks what every page must satisfy: the security headers, no inline script
// or style of any kind, nothing from another host, and a label for every control.
func assertSafePage(t *testing.T, r response) {
	t.Helper()
	h := r.header
	want := map[string]string{
		"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
		"X-Content-Type-Options":  "nosniff",
		"Referrer-Policy":         "no-referrer",
		"X-Frame-Options":         "DENY",
		"Cache-Control":           "no-store",
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Errorf("Content-Type = %q", h.Get("Content-Type"))
	}
	for _, m := range scriptTag.FindAllStringSubmatch(r.body, -1) {
		if !strings.Contains(m[1], "src=") || strings.TrimSpace(m[2]) != "" {
			t.Errorf("inline script: %s", m[0])
		}
	}
	if m := inlineStyle.FindString(r.body); m != "" {
		t.Errorf("inline style: %q", m)
	}
	if m := handlerAttr.FindString(r.body); m != "" {
		t.Errorf("event handler attribute: %q", m)
	}
	if m := externalRef.FindString(r.body); m != "" {
		t.Errorf("reference to another host: %q", m)
	}
	for _, m := range tagRe.FindAllStringSubmatch(r.body, -1) {
		if typeHidden.MatchString(m[2]) {
			continue
		}
		id := idAttr.FindStringSubmatch(m[2])
		if id == nil {
			t.Errorf("control without id (so without label): %s", m[0])
			continue
		}
		if !strings.Contains(r.body, `for="`+id[1]+`"`) {
			t.Errorf("control %s has no <label for>", id[1])
		}
	}
}

func TestPageHeaders(t *testing.T) {
	t.Run("static files carry a content hash and may be cached", func(t *testing.T) {
		e := newEnv(t)
		page := e.get("/signin", "").must(t, http.StatusOK)
		css := regexp.MustCompile(`href="(/static/app\.[0-9a-f]{8}\.css)"`).FindStringSubmatch(page.body)
		js := regexp.MustCompile(`src="(/static/copy\.[0-9a-f]{8}\.js)"`).FindStringSubmatch(page.body)
		if css == nil || js == nil {
			t.Fatalf("no hashed asset URLs in the page")
		}
		r := e.get(css[1], "").must(t, http.StatusOK)
		if !strings.HasPrefix(r.header.Get("Content-Type"), "text/css") || !strings.Contains(r.header.Get("Cache-Control"), "immutable") {
			t.Errorf("stylesheet headers: %v", r.header)
		}
		if r.header.Get("Content-Security-Policy") == "" || r.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("static files must carry the security headers too")
		}
		e.get("/static/app.00000000.css", "").must(t, http.StatusNotFound)
	})
	t.Run("HSTS and Secure cookies when the public URL is https", func(t *testing.T) {
		e := newEnv(t, func(cfg *web.Config, _ string) { cfg.PublicURL = "https://keyward.example.com" })
		r := e.get("/signin", "")
		if !strings.HasPrefix(r.header.Get("Strict-Transport-Security"), "max-age=") {
			t.Errorf("no HSTS: %v", r.header)
		}
		e.person(escrow.RoleAdmin, "admin@example.com")
		r = e.post("/signin", "", url.Values{"email": {"admin@example.com"}, "password": {testPassword}}).must(t, http.StatusSeeOther)
		c := sessionCookie(t, r)
		if !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" {
			t.Errorf("session cookie %+v: want Secure, HttpOnly, SameSite=Lax, Path=/", c)
		}
		// Behind a proxy that rewrites Host, a form from the public origin is still the portal's own.
		e.do(request{method: http.MethodPost, path: "/signin", form: url.Values{},
			headers: map[string]string{"Origin": "https://keyward.example.com", "Sec-Fetch-Site": ""}}).must(t, http.StatusBadRequest)
		e.do(request{method: http.MethodPost, path: "/signin", form: url.Values{},
			headers: map[string]string{"Origin": "https://other.example.com", "Sec-Fetch-Site": ""}}).must(t, http.StatusForbidden)
	})
	t.Run("no HSTS over plain HTTP", func(t *testing.T) {
		e := newEnv(t)
		if h := e.get("/signin", "").header.Get("Strict-Transport-Security"); h != "" {
			t.Errorf("HSTS over plain HTTP: %q", h)
		}
	})
	t.Run("API routes stay on the API", func(t *testing.T) {
		e := newEnv(t)
		r := e.get("/healthz", "").must(t, http.StatusOK)
		if !strings.Contains(r.header.Get("Content-Type"), "json") {
			t.Errorf("/healthz answered %q", r.header.Get("Content-Type"))
		}
		r = e.get("/api/nothing", "").must(t, http.StatusNotFound)
		if !strings.Contains(r.body, `"error"`) {
			t.Errorf("/api/ 404 is not the API's JSON error: %s", r.body)
		}
		r = e.get("/nothing-here", "").must(t, http.StatusNotFound)
		if !strings.Contains(r.body, "There is no page at this address") {
			t.Errorf("portal 404: %s", shortBody(r.body))
		}
	})
}

func sessionCookie(t *testing.T, r response) *http.Cookie {
	t.Helper()
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == "keyward_session" {
			return c
		}
	}
	t.Fatalf("no session cookie set: %v", r.header)
	return nil
}
