package web_test

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/web/browsertest"
)

// The acceptance tests: a real headless Chromium against the real server (the API and the
// portal as serve.go joins them) on a real SQLite file, seeded through the store and the
// agent API with the real BitLocker samples.

// fleet is the installation the browser tests work on.
type fleet struct {
	*env
	alice, bob device
	others     []device
}

func seedFleet(t *testing.T) *fleet {
	t.Helper()
	e := newEnv(t)
	for _, p := range []struct {
		role  escrow.Role
		email string
	}{{escrow.RoleAdmin, "admin@example.com"}, {escrow.RoleHelpdesk, "helpdesk@example.com"}, {escrow.RoleAuditor, "auditor@example.com"},
		{escrow.RoleUser, "alice@example.com"}, {escrow.RoleUser, "bob@example.com"}} {
		e.person(p.role, p.email)
	}
	ks := samples(t, 8)
	f := &fleet{env: e}
	f.alice = e.enroll("LT-ALICE", "alice@example.com", ks[0])
	f.bob = e.enroll("LT-BOB", "bob@example.com", ks[1])
	for i, k := range ks[2:8] {
		f.others = append(f.others, e.enroll("WS-"+string(rune('A'+i))+"-0"+string(rune('1'+i)), "staff"+string(rune('1'+i))+"@example.com", k))
	}
	// One device whose agent has reported but never escrowed: BitLocker on, nothing held,
	// past the grace period (the report counts it as missing escrow).
	lost := e.enroll("LT-MISSING", "carol@example.com")
	id, mount, kind := volumeOf(0)
	e.agent(http.MethodPost, "/api/agent/report", lost.Token, map[string]any{"volumes": []map[string]any{{"volumeId": id, "mountPoint": mount,
		"volumeType": kind, "protectionStatus": "on", "encryptionStatus": "fullyEncrypted", "keyProtectors": []map[string]any{}}}}, http.StatusOK, nil)
	// One that reported a failed escrow.
	failed := e.enroll("LT-FAILED", "dave@example.com")
	e.agent(http.MethodPost, "/api/agent/report", failed.Token, map[string]any{"volumes": []map[string]any{{"volumeId": id, "mountPoint": mount,
		"volumeType": kind, "protectionStatus": "on", "encryptionStatus": "encryptionInProgress", "keyProtectors": []map[string]any{}}}, "events": []map[string]any{{
		"type": "escrowFailed", "volumeId": id, "message": "the TPM did not answer", "time": e.clock.Now().Format(time.RFC3339)}}}, http.StatusOK, nil)
	// One with BitLocker off, and one enrolled that has not reported yet.
	off := e.enroll("LT-OFF", "erin@example.com")
	e.agent(http.MethodPost, "/api/agent/report", off.Token, map[string]any{"volumes": []map[string]any{{"volumeId": id, "mountPoint": mount,
		"volumeType": kind, "protectionStatus": "off", "encryptionStatus": "fullyDecrypted", "keyProtectors": []map[string]any{}}}}, http.StatusOK, nil)
	e.enroll("LT-NEW", "frank@example.com")
	e.clock.Advance(2 * time.Hour)
	return f
}

// browserRun runs the actions with a time limit, failing the test on error.
func browserRun(t *testing.T, ctx context.Context, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatal(err)
	}
}

func evaluate[T any](t *testing.T, ctx context.Context, expr string, opts ...chromedp.EvaluateOption) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, opts...))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

func waitView(name string) chromedp.Action[chromedp.Void] {
	return chromedp.WaitReady(chromedp.CSS(`body[data-view="` + name + `"]`))
}

// signIn signs in through the sign-in form, as a person would.
func signIn(t *testing.T, ctx context.Context, base, email, landing string) {
	t.Helper()
	browserRun(t, ctx,
		chromedp.Navigate(base+"/signin"),
		chromedp.WaitVisible(chromedp.CSS("#email")),
		chromedp.SetValue(chromedp.CSS("#email"), email),
		chromedp.SetValue(chromedp.CSS("#password"), testPassword),
		chromedp.Click(chromedp.CSS(`form[action="/signin"] button[type="submit"]`)),
		waitView(landing),
	)
	if got := evaluate[string](t, ctx, `document.querySelector(".account").textContent`); !strings.Contains(got, email) {
		t.Fatalf("after sign-in the page does not show %s: %q", email, got)
	}
}

// pageProblems lists what the current page must not have: inline script or style, event
// handler attributes, controls without a label.
const pageProblems = `(() => {
  const bad = [];
  document.querySelectorAll("script").forEach(s => { if (!s.src || s.textContent.trim()) bad.push("inline script"); });
  if (document.querySelector("style")) bad.push("style element");
  document.querySelectorAll("*").forEach(el => { for (const a of el.attributes) {
    if (a.name === "style" || a.name.startsWith("on")) bad.push(el.tagName + " " + a.name);
  } });
  document.querySelectorAll("input:not([type=hidden]), select, textarea").forEach(c => {
    if (!c.labels || c.labels.length === 0) bad.push("unlabelled control " + (c.id || c.name));
  });
  if (!document.querySelector("main h1")) bad.push("no h1 in main");
  return bad;
})()`

func checkPage(t *testing.T, ctx context.Context) {
	t.Helper()
	if bad := evaluate[[]string](t, ctx, pageProblems); len(bad) > 0 {
		loc := evaluate[string](t, ctx, `location.pathname`)
		t.Errorf("page %s: %v", loc, bad)
	}
}

// keyShown reads the recovery key of the panel for keyID, block by block.
func keyShown(t *testing.T, ctx context.Context, keyID string) string {
	t.Helper()
	blocks := evaluate[[]string](t, ctx, `Array.from(document.querySelectorAll('.key-panel[data-key-id="`+keyID+`"] .key-block .block')).map(b => b.textContent)`)
	if len(blocks) != 8 {
		t.Fatalf("key %s shown in %d blocks, want 8: %v", keyID, len(blocks), blocks)
	}
	return strings.Join(blocks, "-")
}

// screenshotDir is where screenshots go: KEYWARD_SCREENSHOTS_DIR, or screenshots/ at the root
// of the repository.
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("KEYWARD_SCREENSHOTS_DIR")
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			t.Fatal(err)
		}
		for d := wd; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				dir = filepath.Join(d, "screenshots")
				break
			}
			if filepath.Dir(d) == d {
				t.Fatal("repository root not found")
			}
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// requestLog collects the URL of every request any tab makes.
type requestLog struct {
	mu   sync.Mutex
	urls []string
}

func (l *requestLog) watch(t *testing.T, ctx context.Context) {
	t.Helper()
	err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok {
			l.mu.Lock()
			l.urls = append(l.urls, e.Request.URL)
			l.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestBrowser(t *testing.T) {
	b := browsertest.Start(t)
	f := seedFleet(t)
	base := f.srv.URL
	shots := screenshotDir(t)
	requests := &requestLog{}
	tab := func(t *testing.T) context.Context {
		ctx := b.Tab(t)
		requests.watch(t, ctx)
		return ctx
	}
	aliceKey, bobKey := f.alice.Keys[0], f.bob.Keys[0]
	const reasonDetails = "Alice called from the front desk"

	// The admin's tab lives as long as the whole test: later subtests go on from its pages.
	adminTab := tab(t)
	adminSignedIn := false
	t.Run("admin finds a device by key ID and views its key", func(t *testing.T) {
		ctx := adminTab
		signIn(t, ctx, base, "admin@example.com", "devices")
		checkPage(t, ctx)
		browserRun(t, ctx,
			chromedp.SetValue(chromedp.CSS("#q"), aliceKey.KeyID[:8]),
			chromedp.Click(chromedp.CSS(`form[role="search"] button[type="submit"]`)),
			// The list before the search shows the device too: wait for the answer's page, whose
			// search box carries the text as its value attribute.
			chromedp.WaitReady(chromedp.CSS(`#q[value="`+aliceKey.KeyID[:8]+`"]`)),
			chromedp.WaitVisible(chromedp.CSS(`table a[href="/devices/`+f.alice.ID+`"]`)),
		)
		if rows := evaluate[int](t, ctx, `document.querySelectorAll("main table tbody tr").length`); rows != 1 {
			t.Fatalf("the key ID prefix found %d devices, want 1", rows)
		}
		browserRun(t, ctx,
			chromedp.Click(chromedp.CSS(`table a[href="/devices/`+f.alice.ID+`"]`)),
			waitView("device_overview"),
		)
		checkPage(t, ctx)
		browserRun(t, ctx,
			chromedp.Click(chromedp.CSS(`nav.tabs a[href$="/security"]`)),
			waitView("device_security"),
		)
		checkPage(t, ctx)
		browserRun(t, ctx,
			chromedp.SetValue(chromedp.CSS("#reason"), "forgotten-pin"),
			chromedp.SetValue(chromedp.CSS("#details"), reasonDetails),
			chromedp.Click(chromedp.CSS(`form[action*="/keys"] button[type="submit"]`)),
			chromedp.WaitVisible(chromedp.CSS(".key-panel")),
		)
		checkPage(t, ctx)
		if got := keyShown(t, ctx, aliceKey.KeyID); got != aliceKey.Password {
			t.Fatalf("page shows %s, escrowed %s", got, aliceKey.Password)
		}
		if loc := evaluate[string](t, ctx, `location.href`); strings.Contains(loc, "reason") || strings.Contains(loc, "front") {
			t.Fatalf("the reason is in the URL: %s", loc)
		}
		screenshot(t, ctx, shots, "device-security.png")
		adminSignedIn = true
	})

	t.Run("the Copy button puts the password on the clipboard", func(t *testing.T) {
		if !adminSignedIn {
			t.Skip("needs the key page of the previous test")
		}
		ctx := adminTab
		if err := browsertest.GrantClipboard(ctx, base); err != nil {
			t.Fatal(err)
		}
		browserRun(t, ctx,
			chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
				_, err := chromedp.Call(ctx, emulation.SetFocusEmulationEnabled, emulation.SetFocusEmulationEnabledParams{Enabled: true})
				return err
			}),
			chromedp.Click(chromedp.CSS(`.key-panel[data-key-id="`+aliceKey.KeyID+`"] button[data-copy]`), chromedp.NodeVisible),
			chromedp.WaitVisible(chromedp.CSS(`#copy-`+aliceKey.KeyID+`:not(:empty)`)),
		)
		got := evaluate[string](t, ctx, `navigator.clipboard.readText()`, chromedp.EvalAwaitPromise)
		if got != aliceKey.Password {
			t.Fatalf("clipboard holds %q, want %q", got, aliceKey.Password)
		}
	})

	t.Run("the audit log lists the view with its source and reason", func(t *testing.T) {
		ctx := adminTab
		if !adminSignedIn {
			signIn(t, ctx, base, "admin@example.com", "devices")
		}
		browserRun(t, ctx, chromedp.Navigate(base+"/audit?action=key.read"), waitView("audit"))
		checkPage(t, ctx)
		type row struct{ Action, KeyID, Source, Reason, Text string }
		rows := evaluate[[]row](t, ctx, `Array.from(document.querySelectorAll("tr[data-action]")).map(r => ({
			Action: r.dataset.action, KeyID: r.dataset.keyId, Source: r.querySelector(".source").textContent.trim(),
			Reason: r.querySelector(".reason").textContent.trim(), Text: r.textContent}))`)
		found := slices.ContainsFunc(rows, func(r row) bool {
			return r.Action == "key.read" && r.Source == "admin_portal" && r.Reason == "Forgotten PIN: "+reasonDetails &&
				r.KeyID == aliceKey.KeyID && strings.Contains(r.Text, "admin@example.com") && strings.Contains(r.Text, "success")
		})
		if !found {
			t.Fatalf("no key.read by admin@example.com from admin_portal with the reason in %+v", rows)
		}
		for _, r := range rows {
			if strings.Contains(r.Text, aliceKey.Password) {
				t.Fatal("the audit log page shows key material")
			}
		}
	})

	t.Run("the escrow report draws the four statuses", func(t *testing.T) {
		ctx := adminTab
		if !adminSignedIn {
			signIn(t, ctx, base, "admin@example.com", "devices")
		}
		browserRun(t, ctx, chromedp.Navigate(base+"/reports/escrow"), waitView("report"))
		checkPage(t, ctx)
		if n := evaluate[int](t, ctx, `document.querySelectorAll("svg.chart rect[class^='bar-']").length`); n != 4 {
			t.Errorf("chart has %d bars, want one per status", n)
		}
		text := evaluate[string](t, ctx, `document.querySelector("main").innerText`)
		for _, want := range []string{"Escrowed", "Pending", "Failed", "Not Available", "LT-MISSING", "LT-FAILED", "Escrow missing", "Escrow failed"} {
			if !strings.Contains(text, want) {
				t.Errorf("report page lacks %q", want)
			}
		}
		screenshot(t, ctx, shots, "escrow-report.png")
	})

	t.Run("a user gets their own key on a phone, and nobody else's", func(t *testing.T) {
		ctx := tab(t)
		browserRun(t, ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulatePortrait, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
		signIn(t, ctx, base, "alice@example.com", "self")
		checkPage(t, ctx)
		text := evaluate[string](t, ctx, `document.querySelector("main").innerText`)
		if !strings.Contains(text, "LT-ALICE") || strings.Contains(text, "LT-BOB") {
			t.Fatalf("alice's self-service page must list LT-ALICE only:\n%s", text)
		}
		if w := evaluate[int](t, ctx, `document.documentElement.scrollWidth`); w > 390 {
			t.Errorf("the page is %d px wide on a 390 px screen", w)
		}
		screenshot(t, ctx, shots, "self-service.png")
		lookup := func(keyID string) {
			browserRun(t, ctx,
				chromedp.Navigate(base+"/my"), waitView("self"),
				chromedp.SetValue(chromedp.CSS("#keyId"), keyID),
				chromedp.SetValue(chromedp.CSS("#reason"), "firmware"),
				chromedp.Click(chromedp.CSS(`form[action="/my/key"] button[type="submit"]`)),
				chromedp.WaitReady(chromedp.CSS(`body[data-view="self_key"], body[data-view="error"]`)),
			)
		}
		lookup(strings.ToLower(aliceKey.KeyID[:8]))
		checkPage(t, ctx)
		if got := keyShown(t, ctx, aliceKey.KeyID); got != aliceKey.Password {
			t.Fatalf("self-service shows %s, escrowed %s", got, aliceKey.Password)
		}
		if w := evaluate[int](t, ctx, `document.documentElement.scrollWidth`); w > 390 {
			t.Errorf("the key page is %d px wide on a 390 px screen", w)
		}
		screenshot(t, ctx, shots, "self-service-key.png")

		lookup(bobKey.KeyID[:8])
		othersAnswer := evaluate[string](t, ctx, `document.querySelector("main").innerText`)
		lookup("0000AAAA")
		noneAnswer := evaluate[string](t, ctx, `document.querySelector("main").innerText`)
		if othersAnswer != noneAnswer || !strings.Contains(othersAnswer, "No recovery key with this key ID") {
			t.Fatalf("another person's key ID and an unknown one must answer alike:\n%q\n%q", othersAnswer, noneAnswer)
		}
		if strings.Contains(othersAnswer, bobKey.Password) || strings.Contains(othersAnswer, "LT-BOB") {
			t.Fatal("the answer tells something about bob's device")
		}
		reads := f.events(escrow.AuditFilter{Action: escrow.ActionKeyRead, Source: string(escrow.SourceSelfService), Outcome: string(escrow.OutcomeSuccess)})
		if len(reads) != 1 || reads[0].KeyID != aliceKey.KeyID || reads[0].Actor.Name != "alice@example.com" || reads[0].Reason != "BIOS/UEFI firmware update" {
			t.Fatalf("self-service reads in the audit trail: %+v", reads)
		}
	})

	t.Run("helpdesk cannot open settings or users; an auditor reads the log but views no key", func(t *testing.T) {
		ctx := tab(t)
		signIn(t, ctx, base, "helpdesk@example.com", "devices")
		if n := evaluate[int](t, ctx, `document.querySelectorAll('nav.mainnav a[href="/settings"], nav.mainnav a[href="/users"]').length`); n != 0 {
			t.Error("helpdesk sees links to settings or users")
		}
		for _, path := range []string{"/settings", "/users"} {
			browserRun(t, ctx, chromedp.Navigate(base+path), waitView("error"))
			if h := evaluate[string](t, ctx, `document.querySelector("main h1").textContent`); h != "Not allowed" {
				t.Errorf("helpdesk at %s sees %q", path, h)
			}
		}

		ctx = tab(t)
		signIn(t, ctx, base, "auditor@example.com", "devices")
		browserRun(t, ctx, chromedp.Navigate(base+"/audit"), waitView("audit"))
		if n := evaluate[int](t, ctx, `document.querySelectorAll("tr[data-action]").length`); n == 0 {
			t.Fatal("the auditor sees no audit events")
		}
		browserRun(t, ctx, chromedp.Navigate(base+"/devices/"+f.alice.ID+"/security"), waitView("device_security"))
		if n := evaluate[int](t, ctx, `document.querySelectorAll('form[action*="/keys"]').length`); n != 0 {
			t.Fatal("the auditor is offered the View recovery key form")
		}
		// The form is not there; the auditor's browser posts one anyway.
		evaluate[bool](t, ctx, `(() => {
			const f = document.createElement("form");
			f.method = "post"; f.action = "/devices/`+f.alice.ID+`/keys";
			for (const [k, v] of [["reason", "forgotten-pin"], ["details", ""]]) {
				const i = document.createElement("input"); i.type = "hidden"; i.name = k; i.value = v; f.appendChild(i);
			}
			document.body.appendChild(f); f.submit(); return true;
		})()`)
		browserRun(t, ctx, waitView("error"))
		if h := evaluate[string](t, ctx, `document.querySelector("main h1").textContent`); h != "Not allowed" {
			t.Errorf("the auditor's view answered %q", h)
		}
		if evaluate[int](t, ctx, `document.querySelectorAll(".key-panel").length`) != 0 {
			t.Fatal("the auditor sees a key")
		}
		denied := f.events(escrow.AuditFilter{Action: escrow.ActionKeyRead, Actor: "auditor@example.com", Outcome: string(escrow.OutcomeDenied)})
		if len(denied) != 1 || denied[0].Source != escrow.SourceAdminPortal || denied[0].DeviceID != f.alice.ID {
			t.Fatalf("the auditor's attempt in the audit trail: %+v", denied)
		}
	})

	t.Run("a POST from another origin is refused and changes nothing", func(t *testing.T) {
		ctx := adminTab
		if !adminSignedIn {
			signIn(t, ctx, base, "admin@example.com", "devices")
		}
		cookies, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base}})
		if err != nil {
			t.Fatal(err)
		}
		var session string
		for _, c := range cookies.Cookies {
			if c.Name == "keyward_session" {
				session = c.Value
				if !c.HTTPOnly || c.SameSite != network.CookieSameSiteLax {
					t.Errorf("session cookie in the browser: HttpOnly %v, SameSite %q", c.HTTPOnly, c.SameSite)
				}
			}
		}
		if session == "" {
			t.Fatal("the browser holds no session cookie")
		}
		readsBefore := len(f.events(escrow.AuditFilter{Action: escrow.ActionKeyRead}))
		for _, hdr := range []map[string]string{
			{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
			{"Origin": "http://evil.example", "Sec-Fetch-Site": ""},
		} {
			r := f.do(request{method: http.MethodPost, path: "/settings", cookie: session, headers: hdr,
				form: url.Values{"retentionPeriod": {"1d"}, "escrowGracePeriod": {"1h"}, "rotationTimeout": {"1h"}, "maxKeyAge": {"0"}}}).must(t, http.StatusForbidden)
			if !strings.Contains(r.body, "came from another site") {
				t.Errorf("cross-site answer: %s", shortBody(r.body))
			}
			f.do(request{method: http.MethodPost, path: "/devices/" + f.bob.ID + "/keys", cookie: session, headers: hdr,
				form: url.Values{"reason": {"forgotten-pin"}}}).must(t, http.StatusForbidden)
		}
		set, err := f.db.Settings(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !set.SelfServiceEnabled || !set.AutoRotateOnDisclosure || set.RetentionPeriod != 7*24*time.Hour {
			t.Fatalf("a cross-site POST changed the settings: %+v", set)
		}
		if n := len(f.events(escrow.AuditFilter{Action: escrow.ActionKeyRead})); n != readsBefore {
			t.Fatalf("a cross-site POST reached the disclosure: %d key.read events, had %d", n, readsBefore)
		}
	})

	t.Run("an admin starts incident mode in Settings; every staff page shows it until it is ended", func(t *testing.T) {
		ctx := adminTab
		if !adminSignedIn {
			signIn(t, ctx, base, "admin@example.com", "devices")
		}
		browserRun(t, ctx, chromedp.Navigate(base+"/settings"), waitView("settings"))
		if n := evaluate[int](t, ctx, `document.querySelectorAll(".incident-banner").length`); n != 0 {
			t.Fatal("an incident banner before incident mode is on")
		}
		browserRun(t, ctx,
			chromedp.SetValue(chromedp.CSS("#incidentFor"), "6h"),
			chromedp.Click(chromedp.CSS(`form[action="/settings/incident"] button[type="submit"]`)),
			chromedp.WaitVisible(chromedp.CSS(".incident-banner")),
		)
		checkPage(t, ctx)
		screenshot(t, ctx, shots, "settings-incident.png")
		browserRun(t, ctx, chromedp.Navigate(base+"/devices"), waitView("devices"))
		if text := evaluate[string](t, ctx, `document.querySelector(".incident-banner").innerText`); !strings.Contains(text, "Incident mode is on") {
			t.Fatalf("banner on the device list: %q", text)
		}
		browserRun(t, ctx,
			chromedp.Navigate(base+"/settings"), waitView("settings"),
			chromedp.Click(chromedp.CSS(`form[action="/settings/incident"] button[type="submit"]`)),
			chromedp.WaitVisible(chromedp.CSS("#incidentFor")),
		)
		if n := evaluate[int](t, ctx, `document.querySelectorAll(".incident-banner").length`); n != 0 {
			t.Fatal("the banner stays after incident mode was ended")
		}
		var got []string
		for _, ev := range f.events(escrow.AuditFilter{Actor: "admin@example.com"}) {
			if strings.HasPrefix(ev.Action, "incident.") {
				got = append(got, ev.Action)
			}
		}
		if strings.Join(got, ",") != "incident.start,incident.stop" {
			t.Fatalf("incident events: %q", got)
		}
	})

	t.Run("no page loads anything from another host", func(t *testing.T) {
		requests.mu.Lock()
		defer requests.mu.Unlock()
		if len(requests.urls) < 20 {
			t.Fatalf("only %d requests seen: the listener is not working", len(requests.urls))
		}
		for _, u := range requests.urls {
			if !strings.HasPrefix(u, base+"/") && !strings.HasPrefix(u, "data:") {
				t.Errorf("request to another origin: %s", u)
			}
		}
	})
}
