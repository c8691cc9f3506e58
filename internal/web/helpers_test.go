package web_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/api"
	"github.com/keyward/keyward/internal/bitlockertest"
	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/metrics"
	"github.com/keyward/keyward/internal/password"
	"github.com/keyward/keyward/internal/seal"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/testkit"
	"github.com/keyward/keyward/internal/web"
)

// testPassword is every seeded person's password. Its argon2id hash is computed once: each
// hash costs a second under the race detector.
const testPassword = "correct horse battery staple"

var (
	hashOnce sync.Once
	hashed   string
)

func passwordHash(t testing.TB) string {
	t.Helper()
	hashOnce.Do(func() {
		var err error
		if hashed, err = password.Hash(testPassword); err != nil {
			panic(err)
		}
	})
	return hashed
}

// env is the server as serve.go composes it, on a real SQLite file: the JSON API and the
// portal joined by web.Mount, behind a real HTTP server.
type env struct {
	t     testing.TB
	db    *store.DB
	srv   *httptest.Server
	clock *testkit.Clock
	logs  *testkit.Buffer
	users map[string]escrow.User // by email
}

// newEnv starts the server; configure may change the portal's configuration first (it gets the
// server's URL, which single sign-on needs for its callback).
func newEnv(t testing.TB, configure ...func(cfg *web.Config, serverURL string)) *env {
	t.Helper()
	master, err := seal.Generate()
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := seal.New(master)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, clock: testkit.NewClock(time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)), logs: &testkit.Buffer{}, users: map[string]escrow.User{}}
	e.db, err = store.OpenSQLite(context.Background(), t.TempDir(), store.Options{Sealer: sealer, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var handler http.Handler = http.NotFoundHandler()
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }))
	cfg := web.Config{Now: e.clock.Now}
	for _, c := range configure {
		c(&cfg, e.srv.URL)
	}
	portal, err := web.New(e.db, log, cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New(e.db, log, metrics.Options{Now: e.clock.Now})
	apiServer := api.New(e.db, log)
	apiServer.UseMetrics(m)
	portal.UseMetrics(m)
	handler = logRequests(log, web.Mount(apiServer.Handler(), portal.Handler()))
	t.Cleanup(func() {
		e.srv.Close()
		e.db.Close()
	})
	return e
}

// logRequests logs every request as serve.go does, so that the log tests see what production
// logs: method, path and status, never the query or the body.
func logRequests(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r)
		log.Info("request", slog.String("method", r.Method), slog.String("path", r.URL.Path))
	})
}

var testOrigin = escrow.Origin{Actor: escrow.Actor{Type: escrow.ActorSystem, ID: "test", Name: "test"}, Source: escrow.SourceCLI}

// person adds a user with the role and the test password.
func (e *env) person(role escrow.Role, email string, scopeTags ...string) escrow.User {
	e.t.Helper()
	u, err := e.db.CreateUser(context.Background(), testOrigin, escrow.NewUser{Email: email, Role: role, ScopeTags: scopeTags, PasswordHash: passwordHash(e.t)})
	if err != nil {
		e.t.Fatal(err)
	}
	e.users[email] = u
	return u
}

// session starts a session for the user straight in the store (no password check, which the
// sign-in tests cover) and returns the cookie value.
func (e *env) session(email string) string {
	e.t.Helper()
	u, ok := e.users[email]
	if !ok {
		e.t.Fatalf("no seeded user %s", email)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		e.t.Fatal(err)
	}
	tok := base64.RawURLEncoding.EncodeToString(b)
	h := sha256.Sum256([]byte(tok))
	o := escrow.Origin{Actor: escrow.Actor{Type: escrow.ActorUser, ID: u.ID, Name: u.Email}, Source: escrow.SourceAdminPortal}
	if err := e.db.StartSession(context.Background(), o, u.ID, h[:], "password", 12*time.Hour); err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// device is a seeded device and what its agent holds.
type device struct {
	ID, Name, Token string
	VerificationKey []byte
	Keys            []bitlockertest.Sample
}

// enroll enrolls a device through the agent API and, for each sample, escrows it on a volume
// of its own and reports the volumes encrypted with that protector on them (C: first).
func (e *env) enroll(name, owner string, samples ...bitlockertest.Sample) device {
	e.t.Helper()
	tok, err := e.db.CreateEnrollmentToken(context.Background(), testOrigin, 1, time.Hour)
	if err != nil {
		e.t.Fatal(err)
	}
	var out struct {
		DeviceID, DeviceToken, VerificationKey string
	}
	e.agent(http.MethodPost, "/api/agent/enroll", "", map[string]any{"enrollmentToken": tok.Token.String(), "hostname": name,
		"serialNumber": "SN-" + name, "osVersion": "10.0.26100", "ownerUpn": owner}, http.StatusCreated, &out)
	vk, err := base64.StdEncoding.DecodeString(out.VerificationKey)
	if err != nil {
		e.t.Fatal(err)
	}
	d := device{ID: out.DeviceID, Name: name, Token: out.DeviceToken, VerificationKey: vk, Keys: samples}
	if len(samples) > 0 {
		e.escrowAndReport(d, "fullyEncrypted")
	}
	return d
}

func volumeOf(i int) (id, mount, kind string) {
	if i == 0 {
		return `\\?\Volume{0b7f2a56-1c3d-4e5f-8a9b-0c1d2e3f4a5b}\`, "C:", "operatingSystem"
	}
	return `\\?\Volume{5d1e7c44-9a2b-4c3d-8e4f-6a7b8c9d0e1` + string(rune('0'+i)) + `}\`, string(rune('C'+i)) + ":", "fixedData"
}

func (e *env) escrowAndReport(d device, encryption string) {
	e.t.Helper()
	var vols []map[string]any
	for i, s := range d.Keys {
		id, mount, kind := volumeOf(i)
		e.agent(http.MethodPut, "/api/agent/keys/"+s.KeyID, d.Token, map[string]any{"volumeId": id, "mountPoint": mount,
			"volumeType": kind, "kind": "recoveryPassword", "recoveryPassword": s.Password}, http.StatusCreated, nil)
		m := hmac.New(sha256.New, d.VerificationKey)
		m.Write([]byte(s.Password))
		vols = append(vols, map[string]any{"volumeId": id, "mountPoint": mount, "volumeType": kind, "protectionStatus": "on",
			"encryptionStatus": encryption, "keyProtectors": []map[string]any{
				{"keyId": "0D1C2B3A-4F5E-4D6C-8B7A-9F8E7D6C5B4A", "type": "tpm"},
				{"keyId": s.KeyID, "type": "recoveryPassword", "fingerprint": hex.EncodeToString(m.Sum(nil))},
			}})
	}
	e.agent(http.MethodPost, "/api/agent/report", d.Token, map[string]any{"volumes": vols}, http.StatusOK, nil)
}

// agent calls the agent API and checks the status.
func (e *env) agent(method, path, token string, body any, want int, out any) {
	e.t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		e.t.Fatal(err)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(b))
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	rb, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		e.t.Fatalf("%s %s: status %d, want %d: %s", method, path, res.StatusCode, want, rb)
	}
	if out != nil {
		if err := json.Unmarshal(rb, out); err != nil {
			e.t.Fatal(err)
		}
	}
}

// response is a portal answer.
type response struct {
	status int
	header http.Header
	body   string
}

// request is one request to the portal as a browser of the same origin sends it.
type request struct {
	method  string
	path    string
	cookie  string     // session token, "" for none
	form    url.Values // a POST's body
	headers map[string]string
	// from is the loopback address the request comes from (127.0.0.1 when empty): every
	// 127.x.y.z is this machine, so tests are several clients without any proxy.
	from string
}

// do sends the request without following redirects.
func (e *env) do(r request) response {
	e.t.Helper()
	var body io.Reader
	if r.form != nil {
		body = strings.NewReader(r.form.Encode())
	}
	if r.method == "" {
		r.method = http.MethodGet
	}
	req, err := http.NewRequest(r.method, e.srv.URL+r.path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if r.form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if r.method == http.MethodPost {
		// What a browser sends for a form on the portal's own page.
		req.Header.Set("Origin", e.srv.URL)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	req.Header.Set("User-Agent", "keyward-portal-test/1")
	if r.cookie != "" {
		req.AddCookie(&http.Cookie{Name: "keyward_session", Value: r.cookie})
	}
	for k, v := range r.headers {
		req.Header.Set(k, v)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if r.from != "" {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(r.from)}}
		client.Transport = &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}
	}
	res, err := client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{status: res.StatusCode, header: res.Header, body: string(b)}
}

func (e *env) get(path, cookie string) response {
	e.t.Helper()
	return e.do(request{path: path, cookie: cookie})
}

func (e *env) post(path, cookie string, form url.Values) response {
	e.t.Helper()
	return e.do(request{method: http.MethodPost, path: path, cookie: cookie, form: form})
}

func (r response) must(t testing.TB, status int) response {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body:\n%s", r.status, status, shortBody(r.body))
	}
	return r
}

func shortBody(s string) string {
	if len(s) > 3000 {
		return s[:3000] + "…"
	}
	return s
}

// events returns the audit events matching f, oldest first.
func (e *env) events(f escrow.AuditFilter) []escrow.AuditEvent {
	e.t.Helper()
	var out []escrow.AuditEvent
	if err := e.db.ListAudit(context.Background(), f, func(ev escrow.AuditEvent) error {
		out = append([]escrow.AuditEvent{ev}, out...)
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *env) settings(change map[string]string) {
	e.t.Helper()
	if _, err := e.db.UpdateSettings(context.Background(), testOrigin, change); err != nil {
		e.t.Fatal(err)
	}
}

// samples returns n distinct real recovery-password protectors.
func samples(t testing.TB, n int) []bitlockertest.Sample {
	t.Helper()
	all := bitlockertest.Samples(t)
	seen := map[string]bool{}
	var out []bitlockertest.Sample
	for _, s := range all {
		if seen[s.KeyID[:8]] || seen[s.Password] {
			continue // distinct 8-character prefixes, so a prefix finds one key
		}
		seen[s.KeyID[:8]], seen[s.Password] = true, true
		out = append(out, s)
		if len(out) == n {
			return out
		}
	}
	t.Fatalf("only %d distinct samples", len(out))
	return nil
}
