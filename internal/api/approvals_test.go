package api_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/bitlockertest"
	"github.com/keyward/keyward/internal/escrow"
)

type approvalItem struct {
	ID, DeviceID, DeviceName, Requester, Reason, Ticket, Status, DecidedBy, DecisionReason string
	ExpiresAt                                                                              time.Time
	UsedAt                                                                                 *time.Time
}

type ticketedRecord struct {
	Action, DeviceID, Detail, Ticket, Outcome string
	Actor                                     struct{ Name string }
}

// TestTicketsThroughAPI: the ticket query parameter of a view and the ticket field of a
// rotation are recorded and filterable; the settings' rules refuse a missing or non-matching
// ticket with a 400 that names it, and nothing is disclosed or recorded as a read.
func TestTicketsThroughAPI(t *testing.T) {
	e := newEnv(t)
	s := bitlockertest.Samples(t)[0]
	d := e.enroll("LT-0042", "")
	e.must(201, e.do("PUT", "/api/agent/keys/"+s.KeyID, d.Token, escrowBody("C", s.Password)))
	view := "/api/devices/security/bitlocker/keys/" + d.ID + "?reason=" + url.QueryEscape("Forgotten PIN")
	h := e.person(escrow.RoleHelpdesk, "hd@example.com")

	e.must(200, e.do("GET", view+"&ticket=whatever-7", h, nil))
	r := e.must(400, e.do("PUT", "/api/settings", e.admin, map[string]any{"ticketRequired": true, "ticketPattern": "^INC[0-9"}))
	if !strings.Contains(r.errorMessage(t), "ticketPattern") {
		t.Fatalf("bad pattern: %s", r.body)
	}
	e.must(400, e.do("PUT", "/api/settings", e.admin, map[string]any{"ticketPattern": 7}))
	var set map[string]any
	e.must(200, e.do("PUT", "/api/settings", e.admin, map[string]any{"ticketRequired": true, "ticketPattern": "^INC[0-9]{7}$"})).json(t, &set)
	if set["ticketRequired"] != true || set["ticketPattern"] != "^INC[0-9]{7}$" || set["approvalRequired"] != false || set["approvalTTL"] != "1h" {
		t.Fatalf("settings = %v", set)
	}
	reads := len(e.auditEvents("action=key.read"))
	for _, tt := range []struct{ query, want string }{
		{"", "ticket: required"},
		{"&ticket=INC12", `ticket: "INC12" does not match the required pattern ^INC[0-9]{7}$`},
		{"&ticket=" + url.QueryEscape("INC0000001\x1b[2J"), "ticket: contains control characters"},
	} {
		r := e.must(400, e.do("GET", view+tt.query, h, nil))
		if !strings.HasPrefix(r.errorMessage(t), tt.want) || strings.Contains(string(r.body), s.Password) {
			t.Errorf("view%s = %s, want %q", tt.query, r.body, tt.want)
		}
		r = e.must(400, e.do("POST", "/api/devices/security/bitlocker/keys/"+d.ID+"/rotate", h, map[string]any{"reason": "x", "ticket": strings.TrimPrefix(tt.query, "&ticket=")}))
		if !strings.HasPrefix(r.errorMessage(t), "ticket: ") {
			t.Errorf("rotate with %q = %s", tt.query, r.body)
		}
	}
	if n := len(e.auditEvents("action=key.read")); n != reads {
		t.Fatalf("refused tickets recorded %d reads", n-reads)
	}
	// Self-service is held to no ticket.
	u := e.person(escrow.RoleUser, "alice@example.com")
	own := e.enroll("LT-ALICE", "alice@example.com")
	e.must(201, e.do("PUT", "/api/agent/keys/"+s.KeyID, own.Token, escrowBody("C", s.Password)))
	e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys/"+own.ID+"?reason=mine", u, nil))

	e.must(200, e.do("GET", view+"&ticket=INC0004711", h, nil))
	e.report(d, volumeReport{VolumeID: "C", MountPoint: "C:", VolumeType: "operatingSystem", ProtectionStatus: "on", EncryptionStatus: "fullyEncrypted",
		KeyProtectors: []map[string]any{{"keyId": s.KeyID, "type": "recoveryPassword"}}})
	e.must(202, e.do("POST", "/api/devices/security/bitlocker/keys/"+d.ID+"/rotate", h, map[string]any{"reason": "shown", "ticket": "INC0004711"}))
	var out struct{ Items []ticketedRecord }
	e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys/audit?ticket=INC0004711", e.admin, nil)).json(t, &out)
	var actions []string
	for _, ev := range out.Items {
		if ev.Ticket != "INC0004711" {
			t.Errorf("filtered event without the ticket: %+v", ev)
		}
		actions = append(actions, ev.Action)
	}
	if strings.Join(actions, ",") != "key.rotate.request,key.read" {
		t.Fatalf("events of INC0004711: %v", actions)
	}
	csv := e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys/audit?format=csv&ticket=INC0004711", e.admin, nil))
	if !strings.Contains(string(csv.body), ",detail,ticket,hash") || strings.Count(string(csv.body), "INC0004711") != 2 {
		t.Fatalf("CSV export: %s", csv.body)
	}
}

// TestApprovalThroughAPI: a helpdesk request, a second person's approval, then the view; the
// same person cannot approve their own request; a denial discloses nothing.
func TestApprovalThroughAPI(t *testing.T) {
	e := newEnv(t)
	s := bitlockertest.Samples(t)[0]
	d := e.enroll("LT-0042", "")
	e.must(201, e.do("PUT", "/api/agent/keys/"+s.KeyID, d.Token, escrowBody("C", s.Password)))
	view := "/api/devices/security/bitlocker/keys/" + d.ID + "?reason=" + url.QueryEscape("Forgotten PIN") + "&ticket=INC0000042"
	h1 := e.person(escrow.RoleHelpdesk, "hd1@example.com")
	h2 := e.person(escrow.RoleHelpdesk, "hd2@example.com")
	auditor := e.person(escrow.RoleAuditor, "audrey@example.com")

	// Off by default: asking for approval is a conflict, and the view discloses.
	r := e.must(409, e.do("POST", "/api/approvals", h1, map[string]any{"deviceId": d.ID, "reason": "x"}))
	if r.errorCode(t) != "conflict" {
		t.Fatalf("approval while off: %s", r.body)
	}
	e.must(200, e.do("PUT", "/api/settings", e.admin, map[string]any{"approvalRequired": true, "approvalTTL": "20m"}))

	var req approvalItem
	r = e.must(202, e.do("GET", view, h1, nil))
	r.json(t, &req)
	if req.Status != "pending" || req.Requester != "hd1@example.com" || req.Ticket != "INC0000042" || req.DeviceName != "LT-0042" ||
		strings.Contains(string(r.body), s.Password) || strings.Contains(string(r.body), "recoveryPassword") {
		t.Fatalf("waiting view = %s", r.body)
	}
	var again approvalItem
	e.must(200, e.do("POST", "/api/approvals", h1, map[string]any{"deviceId": d.ID, "reason": "Forgotten PIN"})).json(t, &again)
	if again.ID != req.ID {
		t.Fatalf("POST /api/approvals made %s beside the open %s", again.ID, req.ID)
	}
	e.must(400, e.do("POST", "/api/approvals", h1, map[string]any{"deviceId": d.ID}))
	e.must(400, e.do("POST", "/api/approvals", h1, map[string]any{"deviceId": "LT-0042", "reason": "x"}))
	e.must(400, e.do("POST", "/api/approvals", h1, map[string]any{"deviceId": d.ID, "reason": "x", "extra": 1}))

	var queue struct{ Items []approvalItem }
	e.must(200, e.do("GET", "/api/approvals?status=pending", h2, nil)).json(t, &queue)
	if len(queue.Items) != 1 || queue.Items[0].ID != req.ID {
		t.Fatalf("queue = %+v", queue.Items)
	}
	e.must(403, e.do("GET", "/api/approvals", auditor, nil))
	e.must(403, e.do("POST", "/api/approvals/"+req.ID+"/approve", auditor, nil))
	e.must(400, e.do("GET", "/api/approvals?status=lost", h2, nil))

	// The requester cannot approve their own request, with this token or another of theirs.
	second := e.tokenFor("hd1@example.com")
	for _, tok := range []string{h1, second} {
		r := e.must(403, e.do("POST", "/api/approvals/"+req.ID+"/approve", tok, nil))
		if !strings.Contains(r.errorMessage(t), "your own request") {
			t.Errorf("self-approval: %s", r.body)
		}
	}
	e.must(202, e.do("GET", view, h1, nil))
	e.must(404, e.do("POST", "/api/approvals/6f1d0f0e-0000-4000-8000-000000000000/approve", h2, nil))
	e.must(404, e.do("POST", "/api/approvals/not-an-id/approve", h2, nil))

	var approved approvalItem
	e.must(200, e.do("POST", "/api/approvals/"+req.ID+"/approve", h2, nil)).json(t, &approved)
	if approved.Status != "approved" || approved.DecidedBy != "hd2@example.com" || !approved.ExpiresAt.Equal(e.clock.Now().Add(20*time.Minute)) {
		t.Fatalf("approved = %+v", approved)
	}
	e.must(409, e.do("POST", "/api/approvals/"+req.ID+"/deny", e.admin, nil))

	var keys struct{ Keys []keyItem }
	e.must(200, e.do("GET", view, h1, nil)).json(t, &keys)
	if len(keys.Keys) != 1 || keys.Keys[0].RecoveryPassword != s.Password {
		t.Fatalf("approved view = %+v", keys)
	}
	var mine struct{ Items []approvalItem }
	e.must(200, e.do("GET", "/api/approvals?mine=true", h1, nil)).json(t, &mine)
	if len(mine.Items) != 1 || mine.Items[0].Status != "used" || mine.Items[0].UsedAt == nil {
		t.Fatalf("own requests = %+v", mine.Items)
	}

	var trail struct{ Items []ticketedRecord }
	e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys/audit?ticket=INC0000042", e.admin, nil)).json(t, &trail)
	var got []string
	for _, ev := range trail.Items {
		got = append(got, ev.Action+"/"+ev.Outcome+"/"+ev.Actor.Name+"/"+ev.Detail)
	}
	want := []string{
		"key.read/success/hd1@example.com/request=" + req.ID,
		"key.deny/denied/admin@example.com/request=" + req.ID + "; request approved",
		"key.approve/success/hd2@example.com/request=" + req.ID,
		"key.approve/denied/hd1@example.com/request=" + req.ID + "; own request",
		"key.approve/denied/hd1@example.com/request=" + req.ID + "; own request",
		"key.request/success/hd1@example.com/request=" + req.ID,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("trail of the ticket:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Used once: the next view waits again; a denial of it discloses nothing.
	var next approvalItem
	e.must(202, e.do("GET", view, h1, nil)).json(t, &next)
	var denied approvalItem
	e.must(200, e.do("POST", "/api/approvals/"+next.ID+"/deny", h2, map[string]any{"reason": "no such incident"})).json(t, &denied)
	if denied.Status != "denied" || denied.DecisionReason != "no such incident" {
		t.Fatalf("denied = %+v", denied)
	}
	r = e.must(202, e.do("GET", view, h1, nil))
	if strings.Contains(string(r.body), s.Password) {
		t.Fatal("material after a denial")
	}
	// A lapsed request cannot be approved.
	var lapsing approvalItem
	r.json(t, &lapsing)
	e.clock.Advance(21 * time.Minute)
	e.must(409, e.do("POST", "/api/approvals/"+lapsing.ID+"/approve", h2, nil))
	var expired struct{ Items []approvalItem }
	e.must(200, e.do("GET", "/api/approvals?status=expired", h2, nil)).json(t, &expired)
	if len(expired.Items) != 1 || expired.Items[0].ID != lapsing.ID {
		t.Fatalf("expired = %+v", expired.Items)
	}
	// Admins view directly unless the setting says otherwise.
	e.must(200, e.do("GET", view, e.admin, nil))
	e.must(200, e.do("PUT", "/api/settings", e.admin, map[string]any{"approvalForAdmins": true}))
	e.must(202, e.do("GET", view, e.admin, nil))

	if strings.Contains(e.logs.String(), s.Password) {
		t.Fatal("key material in the logs")
	}
}

// tokenFor makes another API token for an existing person.
func (e *env) tokenFor(email string) string {
	e.t.Helper()
	o := escrow.Origin{Actor: escrow.Actor{Type: escrow.ActorSystem, ID: "test"}, Source: escrow.SourceCLI}
	tok, err := e.db.CreateAPIToken(e.t.Context(), o, email, "second")
	if err != nil {
		e.t.Fatal(err)
	}
	return tok.String()
}
