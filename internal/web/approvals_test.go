package web_test

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/escrow"
)

// viewForm is the View recovery key form as a browser sends it.
func viewForm(ticket string) url.Values {
	return url.Values{"reason": {"forgotten-pin"}, "details": {""}, "ticket": {ticket}}
}

var approveAction = regexp.MustCompile(`action="/approvals/([0-9a-f-]{36})/approve"`)

// TestPortalTickets: the View recovery key and Rotate forms carry a ticket field that says the
// rules; a refused ticket brings the form back with the message and records no read; a
// ticket given is in the events.
func TestPortalTickets(t *testing.T) {
	e := newEnv(t)
	e.person(escrow.RoleHelpdesk, "hd@example.com")
	hd := e.session("hd@example.com")
	s := samples(t, 1)
	d := e.enroll("LT-0042", "", s...)
	e.settings(map[string]string{"ticketRequired": "true", "ticketPattern": "^INC[0-9]{7}$"})

	page := e.get("/devices/"+d.ID+"/security", hd).must(t, http.StatusOK)
	if !regexp.MustCompile(`<input [^>]*name="ticket"[^>]* required>`).MatchString(page.body) || !strings.Contains(page.body, "<code>^INC[0-9]{7}$</code>") {
		t.Fatalf("the View form has no required ticket field naming the pattern:\n%s", shortBody(page.body))
	}
	if rot := e.get("/devices/"+d.ID+"/rotate", hd).must(t, http.StatusOK); !strings.Contains(rot.body, `name="ticket"`) {
		t.Fatal("the Rotate form has no ticket field")
	}
	for _, tk := range []string{"", "INC12"} {
		r := e.post("/devices/"+d.ID+"/keys", hd, viewForm(tk)).must(t, http.StatusBadRequest)
		if !strings.Contains(r.body, "ticket: ") || strings.Contains(r.body, s[0].Password) {
			t.Fatalf("ticket %q: %s", tk, shortBody(r.body))
		}
		r = e.post("/devices/"+d.ID+"/rotate", hd, url.Values{"volume": {""}, "reason": {"shown"}, "ticket": {tk}}).must(t, http.StatusBadRequest)
		if !strings.Contains(r.body, "ticket: ") {
			t.Fatalf("rotate with ticket %q: %s", tk, shortBody(r.body))
		}
	}
	if n := len(e.events(escrow.AuditFilter{Action: escrow.ActionKeyRead})); n != 0 {
		t.Fatalf("%d key.read events for refused tickets", n)
	}
	r := e.post("/devices/"+d.ID+"/keys", hd, viewForm("INC0000042")).must(t, http.StatusOK)
	if !strings.Contains(r.body, strings.Split(s[0].Password, "-")[0]) {
		t.Fatal("the key is not shown")
	}
	e.post("/devices/"+d.ID+"/rotate", hd, url.Values{"volume": {""}, "reason": {"shown"}, "ticket": {"INC0000042"}}).must(t, http.StatusSeeOther)
	var actions []string
	for _, ev := range e.events(escrow.AuditFilter{Ticket: "INC0000042"}) {
		actions = append(actions, ev.Action)
	}
	if strings.Join(actions, ",") != "key.read,key.rotate.request" {
		t.Fatalf("events of the ticket: %v", actions)
	}
	// The audit page filters by ticket.
	e.person(escrow.RoleAdmin, "admin@example.com")
	audit := e.get("/audit?ticket=INC0000042", e.session("admin@example.com")).must(t, http.StatusOK)
	if !strings.Contains(audit.body, `data-action="key.rotate.request"`) || strings.Contains(audit.body, `data-action="settings.update"`) {
		t.Fatalf("audit filtered by ticket:\n%s", shortBody(audit.body))
	}
}

// TestPortalApproval: a helpdesk person's view waits; the queue shows it to another person,
// with a count in the navigation, never to the requester; the requester cannot approve it;
// once approved, one view; a denial discloses nothing.
func TestPortalApproval(t *testing.T) {
	e := newEnv(t)
	e.person(escrow.RoleHelpdesk, "hd1@example.com")
	e.person(escrow.RoleHelpdesk, "hd2@example.com")
	e.person(escrow.RoleAdmin, "admin@example.com")
	hd1, hd2, admin := e.session("hd1@example.com"), e.session("hd2@example.com"), e.session("admin@example.com")
	s := samples(t, 1)
	d := e.enroll("LT-0042", "", s...)
	block := strings.Split(s[0].Password, "-")[0]

	// Off by default: no Approvals entry, the view discloses.
	if page := e.get("/devices", hd1).must(t, http.StatusOK); strings.Contains(page.body, `href="/approvals"`) {
		t.Fatal("Approvals in the navigation while approval is off")
	}
	e.settings(map[string]string{"approvalRequired": "true"})
	if page := e.get("/devices/"+d.ID+"/security", hd1).must(t, http.StatusOK); !strings.Contains(page.body, "second person") {
		t.Fatal("the View form does not say views need approval")
	}

	r := e.post("/devices/"+d.ID+"/keys", hd1, viewForm("INC0000042")).must(t, http.StatusAccepted)
	if strings.Contains(r.body, block) || !strings.Contains(r.body, "waiting for a second person") {
		t.Fatalf("waiting view:\n%s", shortBody(r.body))
	}
	own := e.get("/approvals", hd1).must(t, http.StatusOK)
	if approveAction.MatchString(own.body) || !strings.Contains(own.body, "No requests are waiting for you.") || !strings.Contains(own.body, ">pending<") {
		t.Fatalf("the requester's Approvals page offers their own request:\n%s", shortBody(own.body))
	}
	queue := e.get("/approvals", hd2).must(t, http.StatusOK)
	m := approveAction.FindStringSubmatch(queue.body)
	if m == nil || !strings.Contains(queue.body, "hd1@example.com") || !strings.Contains(queue.body, "INC0000042") {
		t.Fatalf("queue:\n%s", shortBody(queue.body))
	}
	if !regexp.MustCompile(`Approvals <span class="count">1<`).MatchString(queue.body) {
		t.Fatal("no count of waiting requests in the navigation")
	}
	id := m[1]

	// The requester posting the approval themselves is refused and recorded.
	refused := e.post("/approvals/"+id+"/approve", hd1, url.Values{}).must(t, http.StatusForbidden)
	if !strings.Contains(refused.body, "your own request") {
		t.Fatalf("self-approval:\n%s", shortBody(refused.body))
	}
	if ev := e.events(escrow.AuditFilter{Action: escrow.ActionKeyApprove, Outcome: "denied"}); len(ev) != 1 || ev[0].Actor.Name != "hd1@example.com" {
		t.Fatalf("refused approvals: %+v", ev)
	}
	e.post("/devices/"+d.ID+"/keys", hd1, viewForm("INC0000042")).must(t, http.StatusAccepted)

	ok := e.post("/approvals/"+id+"/approve", hd2, url.Values{}).must(t, http.StatusSeeOther)
	if ok.header.Get("Location") != "/approvals?notice=approval-approved" {
		t.Fatalf("redirect to %q", ok.header.Get("Location"))
	}
	if mine := e.get("/approvals", hd1).must(t, http.StatusOK); !strings.Contains(mine.body, "View the key") {
		t.Fatal("the requester's list does not offer the approved view")
	}
	shown := e.post("/devices/"+d.ID+"/keys", hd1, viewForm("INC0000042")).must(t, http.StatusOK)
	if !strings.Contains(shown.body, block) {
		t.Fatalf("approved view:\n%s", shortBody(shown.body))
	}
	reads := e.events(escrow.AuditFilter{Action: escrow.ActionKeyRead})
	if len(reads) != 1 || reads[0].Detail != "request="+id || reads[0].Ticket != "INC0000042" {
		t.Fatalf("key.read events: %+v", reads)
	}

	// Used once; the next request is denied by an admin and shows nothing.
	e.post("/devices/"+d.ID+"/keys", hd1, viewForm("")).must(t, http.StatusAccepted)
	m = approveAction.FindStringSubmatch(e.get("/approvals", admin).must(t, http.StatusOK).body)
	if m == nil {
		t.Fatal("the admin's queue is empty")
	}
	e.post("/approvals/"+m[1]+"/deny", admin, url.Values{"reason": {"no open incident"}}).must(t, http.StatusSeeOther)
	if again := e.post("/approvals/"+m[1]+"/approve", hd2, url.Values{}).must(t, http.StatusConflict); !strings.Contains(again.body, "denied") {
		t.Fatalf("approving a denied request:\n%s", shortBody(again.body))
	}
	if mine := e.get("/approvals", hd1).must(t, http.StatusOK); !strings.Contains(mine.body, "no open incident") {
		t.Fatal("the requester does not see why it was denied")
	}
	if n := len(e.events(escrow.AuditFilter{Action: escrow.ActionKeyRead})); n != 1 {
		t.Fatalf("%d key.read events after the denial, want 1", n)
	}

	// Auditors and self-service have no queue.
	e.person(escrow.RoleAuditor, "audrey@example.com")
	e.get("/approvals", e.session("audrey@example.com")).must(t, http.StatusForbidden)
	if strings.Contains(e.logs.String(), s[0].Password) {
		t.Fatal("key material in the logs")
	}
}

// TestSettingsTicketsAndApproval: the Settings page edits the ticket and approval settings,
// audited like the others; a bad pattern comes back with its message and changes nothing.
func TestSettingsTicketsAndApproval(t *testing.T) {
	e := newEnv(t)
	e.person(escrow.RoleAdmin, "admin@example.com")
	admin := e.session("admin@example.com")
	page := e.get("/settings", admin).must(t, http.StatusOK)
	form := url.Values{"selfServiceEnabled": {"true"}, "autoRotateOnDisclosure": {"true"}}
	for _, name := range []string{"retentionPeriod", "escrowGracePeriod", "rotationTimeout", "maxKeyAge", "approvalTTL"} {
		v := regexp.MustCompile(`name="` + name + `" value="([^"]*)"`).FindStringSubmatch(page.body)
		if v == nil {
			t.Fatalf("no %s field", name)
		}
		form.Set(name, v[1])
	}
	bad := url.Values{}
	for k, v := range form {
		bad[k] = v
	}
	bad.Set("ticketPattern", "(INC")
	if r := e.post("/settings", admin, bad).must(t, http.StatusBadRequest); !strings.Contains(r.body, "ticketPattern: not a regular expression") {
		t.Fatalf("bad pattern:\n%s", shortBody(r.body))
	}
	form.Set("ticketRequired", "true")
	form.Set("ticketPattern", "^INC[0-9]{7}$")
	form.Set("approvalRequired", "true")
	form.Set("approvalTTL", "2h")
	e.post("/settings", admin, form).must(t, http.StatusSeeOther)
	set, err := e.db.Settings(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !set.TicketRequired || set.TicketPattern != "^INC[0-9]{7}$" || !set.ApprovalRequired || set.ApprovalForAdmins || set.ApprovalTTL.String() != "2h0m0s" {
		t.Fatalf("settings = %+v", set)
	}
	ev := e.events(escrow.AuditFilter{Action: escrow.ActionSettingsUpdate})
	if len(ev) != 1 || !strings.Contains(ev[0].Detail, "ticketPattern  -> ^INC[0-9]{7}$") || !strings.Contains(ev[0].Detail, "approvalRequired false -> true") {
		t.Fatalf("settings events: %+v", ev)
	}
}
