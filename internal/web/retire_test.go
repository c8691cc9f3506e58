package web_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/escrow"
)

func TestRetireDeviceInPortal(t *testing.T) {
	e := newEnv(t)
	admin := e.person(escrow.RoleAdmin, "admin@example.com")
	e.person(escrow.RoleHelpdesk, "hd@example.com")
	adminCookie, hdCookie := e.session(admin.Email), e.session("hd@example.com")
	gone := e.enroll("LT-WIPED", "alice@example.com", samples(t, 1)...)
	e.enroll("LT-KEPT", "bob@example.com")
	path := "/devices/" + gone.ID + "/retire"

	// Only admins see the button and the form, and only the portal's own pages may post it.
	if r := e.get("/devices/"+gone.ID, hdCookie).must(t, http.StatusOK); strings.Contains(r.body, "Retire device") {
		t.Fatal("helpdesk is offered Retire device")
	}
	e.get(path, hdCookie).must(t, http.StatusForbidden)
	e.post(path, hdCookie, url.Values{"reason": {"wiped"}}).must(t, http.StatusForbidden)
	if ev := e.events(escrow.AuditFilter{Action: escrow.ActionDeviceRetire, Outcome: string(escrow.OutcomeDenied)}); len(ev) != 2 {
		t.Fatalf("denied device.retire events %+v", ev)
	}
	e.do(request{method: http.MethodPost, path: path, cookie: adminCookie, form: url.Values{"reason": {"wiped"}},
		headers: map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}}).must(t, http.StatusForbidden)
	if r := e.get("/devices/"+gone.ID, adminCookie).must(t, http.StatusOK); !strings.Contains(r.body, `href="/devices/`+gone.ID+`/retire">Retire device</a>`) {
		t.Fatalf("device page for an admin: %s", shortBody(r.body))
	}
	if r := e.get(path, adminCookie).must(t, http.StatusOK); !strings.Contains(r.body, "Retire this device?") || !strings.Contains(r.body, `name="reason"`) {
		t.Fatalf("confirmation page: %s", shortBody(r.body))
	}
	if r := e.post(path, adminCookie, url.Values{"reason": {"  "}}).must(t, http.StatusBadRequest); !strings.Contains(r.body, "Say why the device is retired.") {
		t.Fatalf("no reason: %s", shortBody(r.body))
	}

	r := e.post(path, adminCookie, url.Values{"reason": {"wiped and sold"}}).must(t, http.StatusSeeOther)
	if r.header.Get("Location") != "/devices/"+gone.ID+"?notice=device-retired" {
		t.Fatalf("redirect to %q", r.header.Get("Location"))
	}
	page := e.get(r.header.Get("Location"), adminCookie).must(t, http.StatusOK)
	for _, want := range []string{"Device retired:", "Retired on ", "wiped and sold", "admin@example.com"} {
		if !strings.Contains(page.body, want) {
			t.Errorf("device page after retiring lacks %q: %s", want, shortBody(page.body))
		}
	}
	if strings.Contains(page.body, "Retire device</a>") {
		t.Error("a retired device still offers Retire device")
	}
	ev := e.events(escrow.AuditFilter{Action: escrow.ActionDeviceRetire, Outcome: string(escrow.OutcomeSuccess)})
	if len(ev) != 1 || ev[0].Actor.ID != admin.ID || ev[0].Source != escrow.SourceAdminPortal || ev[0].Reason != "wiped and sold" {
		t.Fatalf("device.retire events %+v", ev)
	}
	if r := e.post(path, adminCookie, url.Values{"reason": {"again"}}).must(t, http.StatusConflict); !strings.Contains(r.body, "already retired") {
		t.Fatalf("retiring twice: %s", shortBody(r.body))
	}
	e.agent(http.MethodGet, "/api/agent/commands", gone.Token, nil, http.StatusUnauthorized, nil)

	// Gone from the device list and the report; its page and its keys are still there.
	if r := e.get("/devices", adminCookie).must(t, http.StatusOK); strings.Contains(r.body, "LT-WIPED") || !strings.Contains(r.body, "LT-KEPT") {
		t.Errorf("device list after retiring: %s", shortBody(r.body))
	}
	// The Retired choice of the status filter lists it alone, with the date it was retired.
	for _, c := range []string{adminCookie, hdCookie} {
		r := e.get("/devices?status=retired", c).must(t, http.StatusOK)
		if !strings.Contains(r.body, ">LT-WIPED<") || strings.Contains(r.body, "LT-KEPT") || !strings.Contains(r.body, "2026-11-25 09:00") ||
			!strings.Contains(r.body, `<option value="retired" selected>`) {
			t.Errorf("retired device list: %s", shortBody(r.body))
		}
	}
	if r := e.get("/devices?status=escrowed", adminCookie).must(t, http.StatusOK); strings.Contains(r.body, "LT-WIPED") {
		t.Errorf("the escrowed filter lists the retired device: %s", shortBody(r.body))
	}
	if r := e.get("/reports/escrow.csv", adminCookie).must(t, http.StatusOK); strings.Contains(r.body, gone.ID) {
		t.Errorf("report CSV lists the retired device: %s", r.body)
	}
	if r := e.get("/devices/"+gone.ID+"/security", adminCookie).must(t, http.StatusOK); !strings.Contains(r.body, "Retired on ") || !strings.Contains(r.body, gone.Keys[0].KeyID) {
		t.Errorf("security page of the retired device: %s", shortBody(r.body))
	}
	if r := e.get("/audit", adminCookie).must(t, http.StatusOK); !strings.Contains(r.body, escrow.ActionDeviceRetire) {
		t.Error("the audit page does not offer device.retire")
	}
}
