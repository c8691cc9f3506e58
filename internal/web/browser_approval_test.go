package web_test

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/web/browsertest"
)

// TestBrowserApprovalQueue: in a real Chromium, a helpdesk person's view waits for approval;
// a second helpdesk person sees the count in the navigation, opens the queue and approves;
// the first views the key from their own list of requests. The requester's queue never offers
// their own request.
func TestBrowserApprovalQueue(t *testing.T) {
	b := browsertest.Start(t)
	e := newEnv(t)
	e.person(escrow.RoleHelpdesk, "hd1@example.com")
	e.person(escrow.RoleHelpdesk, "hd2@example.com")
	key := samples(t, 1)[0]
	d := e.enroll("LT-0042", "alice@example.com", key)
	e.settings(map[string]string{"approvalRequired": "true", "ticketRequired": "true"})
	base := e.srv.URL

	requester := b.Tab(t)
	signIn(t, requester, base, "hd1@example.com", "devices")
	browserRun(t, requester,
		chromedp.Navigate(base+"/devices/"+d.ID+"/security"), waitView("device_security"),
		chromedp.SetValue(chromedp.CSS("#reason"), "forgotten-pin"),
		chromedp.SetValue(chromedp.CSS("#ticket"), "INC0000042"),
		chromedp.Click(chromedp.CSS(`form[action*="/keys"] button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`section#key[aria-label="Waiting for approval"]`)),
	)
	checkPage(t, requester)
	if n := evaluate[int](t, requester, `document.querySelectorAll(".key-panel").length`); n != 0 {
		t.Fatal("a key is shown while the request waits")
	}
	if focused := evaluate[string](t, requester, `location.hash`); focused != "#key" {
		t.Errorf("the answer opens at %q, want #key", focused)
	}
	browserRun(t, requester, chromedp.Navigate(base+"/approvals"), waitView("approvals"))
	checkPage(t, requester)
	if n := evaluate[int](t, requester, `document.querySelectorAll('form[action$="/approve"]').length`); n != 0 {
		t.Fatal("the requester is offered their own request to approve")
	}

	approver := b.Tab(t)
	signIn(t, approver, base, "hd2@example.com", "devices")
	if count := evaluate[string](t, approver, `document.querySelector('nav.mainnav a[href="/approvals"] .count').textContent`); !strings.HasPrefix(count, "1") {
		t.Fatalf("the navigation counts %q waiting, want 1", count)
	}
	browserRun(t, approver,
		chromedp.Click(chromedp.CSS(`nav.mainnav a[href="/approvals"]`)), waitView("approvals"),
	)
	checkPage(t, approver)
	row := evaluate[string](t, approver, `document.querySelector('main table tbody tr').innerText`)
	for _, want := range []string{"LT-0042", "hd1@example.com", "Forgotten PIN", "INC0000042"} {
		if !strings.Contains(row, want) {
			t.Errorf("the queue's row lacks %q: %q", want, row)
		}
	}
	screenshot(t, approver, screenshotDir(t), "approvals.png")
	browserRun(t, approver,
		chromedp.Click(chromedp.CSS(`form[action$="/approve"] button`)),
		chromedp.WaitVisible(chromedp.CSS(`main .notice`)),
	)
	if text := evaluate[string](t, approver, `document.querySelector("main").innerText`); !strings.Contains(text, "Request approved") || !strings.Contains(text, "No requests are waiting for you.") {
		t.Fatalf("after approving: %q", text)
	}

	browserRun(t, requester, chromedp.Navigate(base+"/approvals"), waitView("approvals"))
	if !evaluate[bool](t, requester, `(() => { const a = Array.from(document.querySelectorAll("main a")).find(a => a.textContent === "View the key");
		if (a) a.click(); return !!a; })()`) {
		t.Fatal("the requester's list offers no View the key")
	}
	browserRun(t, requester, waitView("device_security"),
		chromedp.SetValue(chromedp.CSS("#reason"), "forgotten-pin"),
		chromedp.SetValue(chromedp.CSS("#ticket"), "INC0000042"),
		chromedp.Click(chromedp.CSS(`form[action*="/keys"] button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(".key-panel")),
	)
	checkPage(t, requester)
	if got := keyShown(t, requester, key.KeyID); got != key.Password {
		t.Fatalf("page shows %s, escrowed %s", got, key.Password)
	}
	reads := e.events(escrow.AuditFilter{Action: escrow.ActionKeyRead})
	if len(reads) != 1 || !strings.HasPrefix(reads[0].Detail, "request=") || reads[0].Ticket != "INC0000042" || reads[0].Actor.Name != "hd1@example.com" {
		t.Fatalf("key.read events: %+v", reads)
	}
}
