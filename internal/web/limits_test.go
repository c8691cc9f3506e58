package web_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// TestIncidentMode: an admin switches incident mode on in the portal's Settings. While it is
// on, the per-address self-service limit is lifted (a whole office behind one address gets its
// keys) and each person's limit stays; every staff page shows a banner; switching on and off
// are audited with the admin's name; at its end it is off by itself.
func TestIncidentMode(t *testing.T) {
	e := newEnv(t)
	e.person(escrow.RoleAdmin, "admin@example.com")
	e.person(escrow.RoleHelpdesk, "helpdesk@example.com")
	people := []string{"alice@example.com", "bob@example.com", "carol@example.com"}
	cookies := map[string]string{}
	forms := map[string]url.Values{}
	for i, who := range people {
		e.person(escrow.RoleUser, who)
		k := samples(t, 3)[i]
		e.enroll("LT-"+strings.ToUpper(who[:3]), who, k)
		cookies[who] = e.session(who)
		forms[who] = url.Values{"keyId": {k.KeyID[:8]}, "reason": {"forgotten-pin"}}
	}
	admin := e.session("admin@example.com")
	helpdesk := e.session("helpdesk@example.com")
	e.settings(map[string]string{"selfServiceLimitPerPerson": "3", "selfServiceLimitPerAddress": "2"})
	view := func(who string, want int) {
		t.Helper()
		e.post("/my/key", cookies[who], forms[who]).must(t, want)
	}
	banner := func(cookie, path string) bool {
		t.Helper()
		return strings.Contains(e.get(path, cookie).must(t, http.StatusOK).body, "Incident mode is on")
	}

	// The office's address is used up after two views.
	view("alice@example.com", http.StatusOK)
	view("alice@example.com", http.StatusOK)
	view("bob@example.com", http.StatusTooManyRequests)
	if banner(admin, "/devices") {
		t.Fatal("a banner before incident mode is on")
	}

	e.post("/settings/incident", admin, url.Values{"for": {"9d"}}).must(t, http.StatusBadRequest)
	r := e.post("/settings/incident", admin, url.Values{"for": {"6h"}}).must(t, http.StatusSeeOther)
	if loc := r.header.Get("Location"); loc != "/settings?notice=incident-started" {
		t.Fatalf("Location %q", loc)
	}
	set, err := e.db.Settings(t.Context())
	if err != nil || !set.IncidentModeUntil.Equal(e.clock.Now().Add(6*time.Hour).Truncate(time.Second)) {
		t.Fatalf("incidentModeUntil after starting: %v %v", set.IncidentModeUntil, err)
	}

	// Every staff page says so; self-service pages do not.
	for _, path := range []string{"/devices", "/audit", "/settings", "/users", "/tokens", "/reports/escrow"} {
		if !banner(admin, path) {
			t.Errorf("no incident banner on %s", path)
		}
	}
	if !banner(helpdesk, "/devices") {
		t.Error("no incident banner for helpdesk")
	}
	if strings.Contains(e.get("/my", cookies["bob@example.com"]).must(t, http.StatusOK).body, "Incident mode") {
		t.Error("the self-service page shows the incident banner")
	}

	// No per-address limit now; the per-person limit (3) stays.
	view("bob@example.com", http.StatusOK)
	view("carol@example.com", http.StatusOK)
	view("carol@example.com", http.StatusOK)
	view("alice@example.com", http.StatusOK)
	view("alice@example.com", http.StatusTooManyRequests)

	// Stopping it puts the per-address limit back.
	e.post("/settings/incident", admin, url.Values{"stop": {"1"}}).must(t, http.StatusSeeOther)
	view("bob@example.com", http.StatusTooManyRequests)
	if banner(admin, "/devices") {
		t.Error("the banner stays after incident mode ended")
	}

	// It ends by itself at its time.
	e.post("/settings/incident", admin, url.Values{"for": {"1h"}}).must(t, http.StatusSeeOther)
	view("bob@example.com", http.StatusOK)
	e.clock.Advance(61 * time.Minute)      // also a new self-service window
	admin = e.session("admin@example.com") // the old sessions are idle too long
	for _, who := range people {
		cookies[who] = e.session(who)
	}
	if banner(admin, "/devices") {
		t.Error("the banner stays after incident mode's end")
	}
	view("alice@example.com", http.StatusOK)
	view("bob@example.com", http.StatusOK)
	view("carol@example.com", http.StatusTooManyRequests)

	var got []string
	for _, ev := range e.events(escrow.AuditFilter{Actor: "admin@example.com"}) {
		if strings.HasPrefix(ev.Action, "incident.") {
			got = append(got, ev.Action)
		}
	}
	if strings.Join(got, ",") != "incident.start,incident.stop,incident.start" {
		t.Fatalf("incident events of the admin: %q", got)
	}

	// Only admins switch it.
	e.post("/settings/incident", e.session("helpdesk@example.com"), url.Values{"for": {"6h"}}).must(t, http.StatusForbidden)
}

// TestLimitSettingsForm: the portal's Settings page shows every limit and saves a change, and
// refuses a bad one naming it.
func TestLimitSettingsForm(t *testing.T) {
	e := newEnv(t)
	e.person(escrow.RoleAdmin, "admin@example.com")
	admin := e.session("admin@example.com")
	page := e.get("/settings", admin).must(t, http.StatusOK).body
	for _, name := range []string{"signInLimitPerAccount", "signInLimitPerAddress", "signInLimitWindow", "selfServiceLimitPerPerson",
		"selfServiceLimitPerAddress", "selfServiceLimitWindow", "enrollmentLimitPerAddress", "enrollmentLimitWindow"} {
		if !strings.Contains(page, `name="`+name+`"`) {
			t.Errorf("the settings page has no field %s", name)
		}
	}
	form := url.Values{"selfServiceEnabled": {"true"}, "autoRotateOnDisclosure": {"true"}, "selfServiceLimitPerAddress": {"500"}, "enrollmentLimitWindow": {"1h"}}
	e.post("/settings", admin, form).must(t, http.StatusSeeOther)
	set, err := e.db.Settings(t.Context())
	if err != nil || set.SelfServiceLimit.PerAddress != 500 || set.EnrollLimit.Window != time.Hour || set.SignInLimit.PerPerson != 10 {
		t.Fatalf("settings after saving: %+v %+v %+v %v", set.SelfServiceLimit, set.EnrollLimit, set.SignInLimit, err)
	}
	form.Set("signInLimitPerAddress", "0")
	r := e.post("/settings", admin, form).must(t, http.StatusBadRequest)
	if !strings.Contains(r.body, "signInLimitPerAddress: must be a whole number") {
		t.Fatalf("refusal page: %s", shortBody(r.body))
	}
}
