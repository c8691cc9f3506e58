package web_test

import (
	"context"
	"encoding/json"
	"go/build"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/web/browsertest"
)

// axeVersion is the axe-core release the accessibility test runs; .ci/run installs it.
const axeVersion = "4.14.1"

// axeSource returns axe.min.js: KEYWARD_AXE_CORE, else where .ci/run installs it. Without it
// the test skips, unless KEYWARD_TEST_REQUIRE_AXE=1, and then it fails.
func axeSource(t *testing.T) string {
	t.Helper()
	path := os.Getenv("KEYWARD_AXE_CORE")
	if path == "" {
		gopath := os.Getenv("GOPATH")
		if gopath == "" {
			gopath = build.Default.GOPATH
		}
		gopath, _, _ = strings.Cut(gopath, string(os.PathListSeparator))
		path = filepath.Join(gopath, "keyward-tools", "axe-core-"+axeVersion, "node_modules", "axe-core", "axe.min.js")
	}
	src, err := os.ReadFile(path)
	if err != nil {
		if os.Getenv("KEYWARD_TEST_REQUIRE_AXE") == "1" {
			t.Fatalf("axe-core not found at %s (set KEYWARD_AXE_CORE) and KEYWARD_TEST_REQUIRE_AXE=1", path)
		}
		t.Skipf("axe-core not found at %s; set KEYWARD_AXE_CORE or run .ci/run's install to run the accessibility test", path)
	}
	return string(src)
}

// axeViolations runs the WCAG 2.0 and 2.1 A and AA rules on the current page. axe-core is
// evaluated through the DevTools protocol, which the page's Content-Security-Policy does not
// govern: the CSP stays exactly as it is served.
func axeViolations(t *testing.T, ctx context.Context, src string) []string {
	t.Helper()
	if !evaluate[bool](t, ctx, `typeof window.axe === "object"`) {
		evaluate[bool](t, ctx, src+"\n;true")
	}
	return evaluate[[]string](t, ctx, `axe.run(document, {
		runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
		resultTypes: ["violations"],
	}).then(r => r.violations.map(v => v.id + " (" + v.impact + "): " +
		v.nodes.slice(0, 5).map(n => n.target.join(" ") + " — " + n.failureSummary.replace(/\s+/g, " ")).join(" | ")))`, chromedp.EvalAwaitPromise)
}

// setWidth resizes the tab's viewport without reloading the page, then waits for a frame.
func setWidth(t *testing.T, ctx context.Context, width, height int64) {
	t.Helper()
	browserRun(t, ctx, chromedp.EmulateViewport(width, height))
	evaluate[bool](t, ctx, `new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))`, chromedp.EvalAwaitPromise)
}

// focusRingContrast focuses the element and returns the contrast of its focus ring against
// what is around it: the better of the outline's and the halo's (box-shadow) colour, each
// against the first opaque background behind the element's parent.
const focusRingContrast = `((sel) => {
  const el = document.querySelector(sel);
  if (!el) return "no element " + sel;
  el.focus();
  if (!el.matches(":focus-visible")) return sel + " does not match :focus-visible";
  const rgb = s => { const m = s.match(/rgba?\(([\d.]+),\s*([\d.]+),\s*([\d.]+)(?:,\s*([\d.]+))?\)/); return m ? [+m[1], +m[2], +m[3], m[4] === undefined ? 1 : +m[4]] : null; };
  const lum = c => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); }; return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]); };
  const ratio = (a, b) => { const x = lum(a), y = lum(b); return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05); };
  let bg = null;
  for (let n = el.parentElement; n && !bg; n = n.parentElement) {
    const c = rgb(getComputedStyle(n).backgroundColor);
    if (c && c[3] === 1) bg = c;
  }
  bg = bg || [255, 255, 255, 1];
  const cs = getComputedStyle(el);
  let best = 0;
  if (cs.outlineStyle !== "none" && parseFloat(cs.outlineWidth) >= 2) {
    const c = rgb(cs.outlineColor);
    if (c && c[3] === 1) best = Math.max(best, ratio(c, bg));
  }
  const shadow = rgb(cs.boxShadow);
  if (shadow && shadow[3] === 1) best = Math.max(best, ratio(shadow, bg));
  return best.toFixed(2);
})`

// TestBrowserAccessibility runs axe-core's WCAG 2.1 A and AA rules on every portal page state
// at desktop and phone widths, and checks what axe cannot: no sideways scrolling, no dead Copy
// button without JavaScript, a visible focus ring, block numbers left out of a copied key, and
// the whole key with its Copy button on one phone screen.
func TestBrowserAccessibility(t *testing.T) {
	src := axeSource(t)
	b := browsertest.Start(t)
	f := seedFleet(t)
	base := f.srv.URL
	shots := screenshotDir(t)
	aliceKey := f.alice.Keys[0]

	// check runs the checks of one page state at each width, the state staying as it is.
	check := func(t *testing.T, ctx context.Context, state string) {
		t.Helper()
		for _, w := range []int64{1280, 640, 390} {
			setWidth(t, ctx, w, 844)
			if w != 640 {
				for _, v := range axeViolations(t, ctx, src) {
					t.Errorf("%s at %d px: %s", state, w, v)
				}
			}
			if w != 1280 {
				if sw := evaluate[int](t, ctx, `document.documentElement.scrollWidth`); sw > int(w) {
					wide := evaluate[[]string](t, ctx, `Array.from(document.querySelectorAll("main *")).filter(e => e.getBoundingClientRect().right > `+strconv.FormatInt(w, 10)+` + 1).slice(-3).map(e => e.tagName + "." + e.className)`)
					t.Errorf("%s is %d px wide at %d px: %v", state, sw, w, wide)
				}
			}
		}
		setWidth(t, ctx, 1280, 900)
	}
	rings := func(t *testing.T, ctx context.Context, sels ...string) {
		t.Helper()
		for _, sel := range sels {
			got := evaluate[string](t, ctx, focusRingContrast+"("+strconv.Quote(sel)+")")
			r, err := strconv.ParseFloat(got, 64)
			if err != nil {
				t.Errorf("focus ring of %s: %s", sel, got)
			} else if r < 3 {
				t.Errorf("focus ring of %s has contrast %.2f:1 against its background, want at least 3:1", sel, r)
			}
		}
	}

	admin := b.Tab(t)
	t.Run("admin pages", func(t *testing.T) {
		ctx := admin
		browserRun(t, ctx, chromedp.Navigate(base+"/signin"), waitView("signin"))
		check(t, ctx, "sign-in")
		rings(t, ctx, "#email", `form[action="/signin"] button[type="submit"]`)
		signIn(t, ctx, base, "admin@example.com", "devices")
		rings(t, ctx, "nav.mainnav a", ".topbar .btn-quiet", "#q", `form[role="search"] button[type="submit"]`, "main table a")
		check(t, ctx, "device list")
		setWidth(t, ctx, 390, 844)
		// On a phone every device's status is on screen, not cut off by its table.
		if cut := evaluate[[]string](t, ctx, `Array.from(document.querySelectorAll("main tbody .badge")).filter(b => b.getBoundingClientRect().right > 390).map(b => b.textContent)`); len(cut) > 0 {
			t.Errorf("on a 390 px phone these statuses are cut off: %q", cut)
		}
		screenshot(t, ctx, shots, "devices-phone.png")
		setWidth(t, ctx, 1280, 900)
		// The skip link moves the focus to the content (Safari needs the target focusable).
		browserRun(t, ctx, chromedp.Focus(chromedp.CSS(".skip-link")), chromedp.KeyEvent("\r"))
		if id := evaluate[string](t, ctx, `document.activeElement.id`); id != "main" {
			t.Errorf("the skip link leaves the focus on %q, want main", id)
		}
		offDevice := evaluate[string](t, ctx, `Array.from(document.querySelectorAll("main table a")).find(a => a.textContent === "LT-OFF").getAttribute("href")`)
		for _, p := range []struct{ path, view, state string }{
			{"/devices?q=" + aliceKey.KeyID[:8], "devices", "device search by key ID"},
			{"/devices?status=retired", "devices", "retired devices"},
			{"/devices/" + f.alice.ID, "device_overview", "device overview"},
			{"/devices/" + f.alice.ID + "/security", "device_security", "device security"},
			{"/devices/" + f.alice.ID + "/rotate", "rotate_confirm", "rotate confirmation"},
			{"/devices/" + f.alice.ID + "/retire", "retire_confirm", "retire confirmation"},
			{"/audit", "audit", "audit log"},
			{"/audit?action=key.read", "audit", "audit log filtered"},
			{"/reports/escrow", "report", "escrow report"},
			{"/users", "users", "users"},
			{"/tokens", "tokens", "tokens"},
			{"/settings", "settings", "settings"},
			{"/my", "self", "admin's own devices"},
			{"/no-such-page", "error", "not found"},
		} {
			browserRun(t, ctx, chromedp.Navigate(base+p.path), waitView(p.view))
			check(t, ctx, p.state)
		}

		browserRun(t, ctx, chromedp.Navigate(base+offDevice+"/security"), waitView("device_security"))
		if n := evaluate[int](t, ctx, `document.querySelectorAll('a[href$="/rotate"]').length`); n != 0 {
			t.Error("a device with BitLocker off is offered Rotate key")
		}
		browserRun(t, ctx, chromedp.Navigate(base+"/users"), waitView("users"))
		if names := evaluate[[]string](t, ctx, `Array.from(document.querySelectorAll("main form button")).map(b => b.textContent).filter(n => !n.includes("@"))`); len(names) != 1 || names[0] != "Add person" {
			t.Errorf("buttons on /users that do not name their person: %q", names)
		}
		browserRun(t, ctx, chromedp.Navigate(base+"/audit"), waitView("audit"))
		if bad := evaluate[[]string](t, ctx, `(() => { const bad = [];
			let links = 0;
			document.querySelectorAll("table.audit tbody td").forEach(td => { let prev = null; td.querySelectorAll("a").forEach(a => {
				links++;
				const r = a.getBoundingClientRect();
				if (r.width < 24 || r.height < 24) bad.push(a.textContent + " is " + Math.round(r.width) + "x" + Math.round(r.height));
				if (prev && r.top < prev.bottom) bad.push(a.textContent + " overlaps the link above");
				prev = r; }); });
			if (links === 0) bad.push("no links in the audit table");
			return bad.slice(0, 5); })()`); len(bad) > 0 {
			t.Errorf("audit-table links smaller than 24x24 px: %v", bad)
		}
		browserRun(t, ctx, chromedp.Navigate(base+"/reports/escrow"), waitView("report"))
		setWidth(t, ctx, 390, 844)
		if bad := evaluate[[]string](t, ctx, `Array.from(document.querySelectorAll("svg.chart text")).filter(e => getComputedStyle(e).display !== "none" && e.getBoundingClientRect().height < 12).map(e => e.textContent + " " + e.getBoundingClientRect().height.toFixed(1) + " px")`); len(bad) > 0 {
			t.Errorf("chart labels too small to read on a phone: %v", bad)
		}
		if n := evaluate[int](t, ctx, `Array.from(document.querySelectorAll(".legend li")).filter(e => e.offsetParent !== null).length`); n != 4 {
			t.Errorf("on a phone the chart's legend shows %d statuses", n)
		}
		setWidth(t, ctx, 1280, 900)

		// A view of the key: the page comes back at the key, focused, with Copy a Tab away.
		browserRun(t, ctx,
			chromedp.Navigate(base+"/devices/"+f.alice.ID+"/security"), waitView("device_security"),
			chromedp.SetValue(chromedp.CSS("#reason"), "forgotten-pin"),
			chromedp.Click(chromedp.CSS(`form[action*="/keys"] button[type="submit"]`)),
			chromedp.WaitVisible(chromedp.CSS(".key-panel")),
		)
		check(t, ctx, "device security after a view")
		screenshot(t, ctx, shots, "device-security-key.png")
		setWidth(t, ctx, 390, 844)
		screenshot(t, ctx, shots, "device-security-key-phone.png")
		setWidth(t, ctx, 1280, 900)
		if id := evaluate[string](t, ctx, `document.activeElement.id`); id != "key" {
			t.Errorf("after the view the focus is on %q, want the key", id)
		}
		if top := evaluate[float64](t, ctx, `document.querySelector(".key-panel").getBoundingClientRect().top`); top < -2 || top > 200 {
			t.Errorf("after the view the key is at %.0f px from the top of the window", top)
		}
		browserRun(t, ctx, chromedp.KeyEvent("\t"))
		if got := evaluate[string](t, ctx, `document.activeElement.matches("button[data-copy]") ? "Copy" : document.activeElement.outerHTML.slice(0, 80)`); got != "Copy" {
			t.Errorf("one Tab after the view reaches %s, want Copy", got)
		}
		rings(t, ctx, ".key-panel button[data-copy]", "#reason")
		// Selecting the key by hand copies its digits, not the block numbers.
		sel := evaluate[string](t, ctx, `(() => { const r = document.createRange(); r.selectNodeContents(document.querySelector(".recovery-key"));
			const s = getSelection(); s.removeAllRanges(); s.addRange(r); const t = s.toString(); s.removeAllRanges(); return t; })()`)
		if got := strings.Join(strings.Fields(sel), "-"); got != aliceKey.Password {
			t.Errorf("the selected key reads %q, want %s", sel, aliceKey.Password)
		}

		// A request waiting for approval, so the queue is checked with its Approve and Deny forms.
		f.settings(map[string]string{"approvalRequired": "true"})
		hd := f.users["helpdesk@example.com"]
		if _, err := f.db.Disclose(t.Context(), escrow.Origin{Actor: escrow.Actor{Type: escrow.ActorUser, ID: hd.ID, Name: hd.Email}, Source: escrow.SourceAdminPortal},
			f.bob.ID, escrow.Access{Reason: "Forgotten PIN", Ticket: "INC0000042", Role: escrow.RoleHelpdesk}, func(escrow.Device, escrow.Settings) bool { return true }); err != nil {
			t.Fatal(err)
		}
		browserRun(t, ctx, chromedp.Navigate(base+"/approvals"), waitView("approvals"))
		check(t, ctx, "approvals with one waiting")
		rings(t, ctx, `form[action$="/approve"] button`, `form[action$="/deny"] input`)

		browserRun(t, ctx,
			chromedp.Navigate(base+"/tokens"), waitView("tokens"),
			chromedp.SetValue(chromedp.CSS("#api-name"), "inventory sync"),
			chromedp.Click(chromedp.CSS(`form[action="/tokens/api"] button[type="submit"]`)),
			waitView("token_created"),
		)
		check(t, ctx, "API token created")
		browserRun(t, ctx, chromedp.Navigate(base+"/tokens"), waitView("tokens"))
		check(t, ctx, "tokens with one")
		browserRun(t, ctx,
			chromedp.Navigate(base+"/settings"), waitView("settings"),
			chromedp.SetValue(chromedp.CSS("#incidentFor"), "6h"),
			chromedp.Click(chromedp.CSS(`form[action="/settings/incident"] button[type="submit"]`)),
			chromedp.WaitVisible(chromedp.CSS(".incident-banner")),
		)
		check(t, ctx, "settings in incident mode")
		browserRun(t, ctx, chromedp.Click(chromedp.CSS(`form[action="/settings/incident"] button[type="submit"]`)), chromedp.WaitVisible(chromedp.CSS("#incidentFor")))
	})

	t.Run("self-service pages on a phone", func(t *testing.T) {
		ctx := b.Tab(t)
		browserRun(t, ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulatePortrait, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
		signIn(t, ctx, base, "alice@example.com", "self")
		check(t, ctx, "self-service start")
		lookup := func(keyID string) {
			browserRun(t, ctx,
				chromedp.Navigate(base+"/my"), waitView("self"),
				chromedp.SetValue(chromedp.CSS("#keyId"), keyID),
				chromedp.SetValue(chromedp.CSS("#reason"), "firmware"),
				chromedp.Click(chromedp.CSS(`form[action^="/my/key"] button[type="submit"]`)),
				chromedp.WaitReady(chromedp.CSS(`body[data-view="self_key"], body[data-view="error"]`)),
			)
		}
		lookup("0000AAAA")
		check(t, ctx, "self-service unknown key ID")
		lookup(aliceKey.KeyID[:8])
		check(t, ctx, "self-service key")
		if skips := evaluate[[]string](t, ctx, `(() => { let last = 0; const bad = [];
			document.querySelectorAll("h1, h2, h3, h4, h5, h6").forEach(h => { const l = +h.tagName[1]; if (l > last + 1) bad.push(h.tagName + " " + h.textContent.trim()); last = l; });
			return bad; })()`); len(skips) > 0 {
			t.Errorf("headings on the key page skip a level: %v", skips)
		}
		browserRun(t, ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulatePortrait, chromedp.EmulateMobile, chromedp.EmulateScale(2)))
		evaluate[bool](t, ctx, `new Promise(r => requestAnimationFrame(() => r(true)))`, chromedp.EvalAwaitPromise)
		type box struct{ Name, Bottom string }
		var boxes []box
		raw := evaluate[string](t, ctx, `JSON.stringify([...Array.from(document.querySelectorAll(".key-block")).map((b, i) => ({Name: "block " + (i + 1), Bottom: String(b.getBoundingClientRect().bottom + scrollY)})),
			{Name: "Copy", Bottom: String((() => { const c = document.querySelector("button[data-copy]"); return c && c.offsetParent ? c.getBoundingClientRect().bottom + scrollY : 99999; })())}])`)
		if err := json.Unmarshal([]byte(raw), &boxes); err != nil {
			t.Fatal(err)
		}
		for _, bx := range boxes {
			y, _ := strconv.ParseFloat(bx.Bottom, 64)
			t.Logf("%s ends at %.0f px", bx.Name, y)
			if y > 844 {
				t.Errorf("on a 390x844 phone %s ends at %.0f px, below the first screen", bx.Name, y)
			}
		}
		screenshot(t, ctx, shots, "self-service-key-phone.png")
	})

	t.Run("too many self-service attempts", func(t *testing.T) {
		ctx := b.Tab(t)
		signIn(t, ctx, base, "bob@example.com", "self")
		// The person's attempts run out (ten an hour by default); the next answer is the limit page.
		limited := func() bool { return evaluate[string](t, ctx, `document.title`) == "Too many attempts · Keyward" }
		for i := 0; i < 11 && !limited(); i++ {
			browserRun(t, ctx,
				chromedp.Navigate(base+"/my"), waitView("self"),
				chromedp.SetValue(chromedp.CSS("#keyId"), "0000AAAA"),
				chromedp.SetValue(chromedp.CSS("#reason"), "firmware"),
				chromedp.Click(chromedp.CSS(`form[action^="/my/key"] button[type="submit"]`)),
				waitView("error"),
			)
		}
		if h := evaluate[string](t, ctx, `document.querySelector("main h1").textContent`); h != "Too many attempts" {
			t.Fatalf("after eleven attempts the page says %q", h)
		}
		if text := evaluate[string](t, ctx, `document.querySelector("main").innerText`); !strings.Contains(text, "helpdesk") {
			t.Errorf("the limit page does not say how to reach the helpdesk:\n%s", text)
		}
		check(t, ctx, "self-service limit reached")
	})

	t.Run("without JavaScript no Copy button shows", func(t *testing.T) {
		ctx := b.Tab(t)
		signIn(t, ctx, base, "admin@example.com", "devices")
		if _, err := chromedp.Call(ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
			t.Fatal(err)
		}
		browserRun(t, ctx,
			chromedp.Navigate(base+"/devices/"+f.bob.ID+"/security"), waitView("device_security"),
			chromedp.SetValue(chromedp.CSS("#reason"), "forgotten-pin"),
			chromedp.Click(chromedp.CSS(`form[action*="/keys"] button[type="submit"]`)),
			chromedp.WaitVisible(chromedp.CSS(".key-panel")),
		)
		// Evaluate runs through the DevTools protocol even with the page's scripts off.
		if n := evaluate[int](t, ctx, `Array.from(document.querySelectorAll("button[data-copy]")).filter(b => b.offsetParent !== null).length`); n != 0 {
			t.Errorf("with JavaScript off %d Copy buttons are visible", n)
		}
		if n := evaluate[int](t, ctx, `document.querySelectorAll(".key-block").length`); n != 8 {
			t.Errorf("with JavaScript off the key shows %d blocks", n)
		}
	})
}
