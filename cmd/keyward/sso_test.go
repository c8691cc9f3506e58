package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

	"github.com/oauth2-proxy/mockoidc"
)

// TestSSOWithReadmeFlags starts `keyward serve` with the README's single sign-on flags (no
// --oidc-scopes) against a real OpenID provider on loopback: the groups claim is asked for by
// default, so people get the role their group maps to, and the admin commands manage roles and
// links beside the running server.
func TestSSOWithReadmeFlags(t *testing.T) {
	idp, err := mockoidc.NewServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := idp.Start(ln, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = idp.Shutdown() })
	// The callback URL is configured before the server listens: take a free port for it.
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := free.Addr().String()
	free.Close()

	dir := t.TempDir()
	cfg := idp.Config()
	r := start(t, dir, map[string]string{"KEYWARD_LISTEN": addr, "KEYWARD_PUBLIC_URL": "http://" + addr,
		"KEYWARD_OIDC_ISSUER": cfg.Issuer, "KEYWARD_OIDC_CLIENT_ID": cfg.ClientID, "KEYWARD_OIDC_CLIENT_SECRET": cfg.ClientSecret,
		"KEYWARD_OIDC_ROLE_MAP": "kw-admins=admin,kw-helpdesk=helpdesk,kw-auditors=auditor"})
	run := cliRunner(t, dir)
	signOn := func(u *mockoidc.MockUser) (int, string) {
		t.Helper()
		idp.QueueUser(u)
		jar, err := cookiejar.New(nil)
		if err != nil {
			t.Fatal(err)
		}
		c := &http.Client{Jar: jar, Timeout: 20 * time.Second}
		res, err := c.Get(r.URL() + "/signin/sso")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, res.Request.URL.Path + "\n" + string(b)
	}

	if code, page := signOn(&mockoidc.MockUser{Subject: "hd-sub", Email: "hd@example.com", EmailVerified: true, Groups: []string{"kw-helpdesk"}}); code != 200 || !strings.HasPrefix(page, "/devices\n") {
		t.Fatalf("helpdesk sign-on: %d %s", code, page[:min(len(page), 200)])
	}
	if out := run(0, "users", "list"); !strings.Contains(out, "hd@example.com  helpdesk") {
		t.Fatalf("users list after the sign-on: %q", out)
	}

	// users set-role: audited, and never the last enabled admin away.
	if out := run(0, "users", "set-role", "--email", "HD@example.com", "--role", "admin"); !strings.HasSuffix(out, "\thd@example.com\tadmin\n") {
		t.Fatalf("set-role printed %q", out)
	}
	if out := run(1, "users", "set-role", "--email", "hd@example.com", "--role", "user"); !strings.Contains(out, "last admin") {
		t.Fatalf("demoting the last admin: %q", out)
	}
	run(2, "users", "set-role", "--email", "hd@example.com", "--role", "root")
	run(1, "users", "set-role", "--email", "nobody@example.com", "--role", "user")

	// users link-sso: a password account is linked only after it, and loses its password then.
	if code, _, stderr := cli(t, dir, "a long sign-in password\n", "users", "add", "--email", "pw@example.com", "--role", "auditor", "--password-stdin"); code != 0 {
		t.Fatalf("users add --password-stdin: %d %s", code, stderr)
	}
	pwUser := &mockoidc.MockUser{Subject: "pw-sub", Email: "pw@example.com", EmailVerified: true, Groups: []string{"kw-auditors"}}
	if code, page := signOn(pwUser); code != 401 || !strings.Contains(page, "Ask an administrator to link it") {
		t.Fatalf("password account before link-sso: %d %s", code, page[:min(len(page), 300)])
	}
	if out := run(0, "users", "link-sso", "--email", "pw@example.com"); !strings.Contains(out, "pw@example.com\tlinked at the next single sign-on") {
		t.Fatalf("link-sso printed %q", out)
	}
	if code, page := signOn(pwUser); code != 200 || !strings.HasPrefix(page, "/devices\n") {
		t.Fatalf("password account after link-sso: %d %s", code, page[:min(len(page), 300)])
	}
	run(1, "users", "link-sso", "--email", "nobody@example.com")
	if out := run(1, "users", "add", "--email", "\u017fam@example.com", "--role", "user"); !strings.Contains(out, "email: ") {
		t.Fatalf("users add with a look-alike: %q", out)
	}

	var events struct {
		Items []struct{ Action, Outcome, Source, Detail string }
	}
	admin := strings.TrimSpace(run(0, "tokens", "create", "--user", "hd@example.com"))
	if err := json.Unmarshal(mustCall(t, 200, "GET", r.URL()+"/api/devices/security/bitlocker/keys/audit?limit=1000", admin, ""), &events); err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, e := range events.Items {
		count[e.Action+" "+e.Outcome+" "+e.Source]++
	}
	for _, want := range []string{"user.role success cli", "user.sso_link_allow success cli", "user.sso_link success admin_portal", "auth.signin denied admin_portal"} {
		if count[want] != 1 {
			t.Errorf("%s: %d events, want 1 (%v)", want, count[want], count)
		}
	}
}

// TestCommandsRefuseInvisibleText: the admin commands hold names, tags and reasons to the same
// rules as the API (a 400 there, exit 1 here, naming the field) and store nothing refused.
func TestCommandsRefuseInvisibleText(t *testing.T) {
	dir := t.TempDir()
	start(t, dir, nil) // the installation, with its master key: admin commands need it
	run := cliRunner(t, dir)
	run(0, "users", "add", "--email", "admin@example.com", "--role", "admin")
	for _, c := range []struct {
		args  []string
		field string
	}{
		{[]string{"tokens", "create", "--user", "admin@example.com", "--name", "ci\u202e"}, "name: "},
		{[]string{"users", "add", "--email", "hd@example.com", "--role", "helpdesk", "--scope-tags", "lab\u202e"}, "scopeTags: "},
		{[]string{"users", "add", "--email", "\u212aeith@example.com", "--role", "user"}, "email: "},
		{[]string{"users", "link-sso", "--email", "\u017fam@example.com"}, "email: "},
	} {
		if out := run(1, c.args...); !strings.Contains(out, c.field) {
			t.Errorf("%v: %q does not name %s", c.args, out, c.field)
		}
	}
	if out := run(0, "users", "list"); strings.Count(out, "\n") != 2 {
		t.Fatalf("users after refusals: %q", out)
	}
	if out := run(0, "tokens", "list"); strings.Count(out, "\n") != 1 {
		t.Fatalf("tokens after refusals: %q", out)
	}
}
