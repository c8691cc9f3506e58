package store_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/escrow"
)

var secondHelpdesk = escrow.Origin{
	Actor:  escrow.Actor{Type: escrow.ActorUser, ID: "user-helpdesk-2", Name: "helpdesk2@example.com"},
	Source: escrow.SourceAdminPortal,
}

func asHelpdesk(reason, ticket string) escrow.Access {
	return escrow.Access{Reason: reason, Ticket: ticket, Role: escrow.RoleHelpdesk}
}

func (e *env) settings(change map[string]string) {
	e.t.Helper()
	if _, err := e.db.UpdateSettings(e.ctx, adminOrigin, change); err != nil {
		e.t.Fatalf("UpdateSettings: %v", err)
	}
}

func (e *env) decide(o escrow.Origin, id string, approve bool, reason string) (escrow.Approval, error) {
	return e.db.DecideApproval(e.ctx, o, id, approve, reason, allowDevice)
}

// TestApprovalFlow: a helpdesk view waits for a second person, who is never the requester;
// the approval is used by one view, whose key.read names the request; every step is an event.
func TestApprovalFlow(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	en := e.enroll("LT-0042", "")
	e.escrowPassword(en, osVolume, xts128)
	e.settings(map[string]string{"approvalRequired": "true", "approvalTTL": "30m"})

	d, err := e.db.Disclose(e.ctx, helpdeskOrigin, en.DeviceID, asHelpdesk("forgotten PIN", "INC0000042"), allowAll)
	if err != nil {
		t.Fatalf("Disclose: %v", err)
	}
	if d.Pending == nil || len(d.Keys) != 0 {
		t.Fatalf("Disclose = %+v, want a pending request and no keys", d)
	}
	req := *d.Pending
	if req.Status != escrow.ApprovalPending || req.Requester != "helpdesk@example.com" || req.Ticket != "INC0000042" ||
		req.DeviceName != "LT-0042" || !req.ExpiresAt.Equal(e.clock.Now().UTC().Add(30*time.Minute).Truncate(time.Microsecond)) {
		t.Errorf("request = %+v", req)
	}
	if n := e.countEvents(escrow.AuditFilter{Action: escrow.ActionKeyRead}); n != 0 {
		t.Errorf("%d key.read events while waiting, want 0", n)
	}
	reqs := e.events(escrow.AuditFilter{Action: escrow.ActionKeyRequest})
	if len(reqs) != 1 || reqs[0].Detail != "request="+req.ID || reqs[0].Ticket != "INC0000042" || reqs[0].Reason != "forgotten PIN" ||
		reqs[0].DeviceID != en.DeviceID || reqs[0].Actor.Name != "helpdesk@example.com" {
		t.Fatalf("key.request events = %+v", reqs)
	}

	// Asking again waits on the same request.
	again, err := e.db.Disclose(e.ctx, helpdeskOrigin, en.DeviceID, asHelpdesk("forgotten PIN", "INC0000042"), allowAll)
	if err != nil || again.Pending == nil || again.Pending.ID != req.ID {
		t.Fatalf("second Disclose = %+v, %v; want the same pending request", again, err)
	}

	// The requester cannot approve it, through the portal or with an API token of their own.
	token := escrow.Origin{Actor: escrow.Actor{Type: escrow.ActorToken, ID: "tok-1", Name: "helpdesk@example.com"}, Source: escrow.SourceAPI}
	for _, o := range []escrow.Origin{helpdeskOrigin, token} {
		_, err := e.decide(o, req.ID, true, "")
		wantCode(t, err, escrow.CodeForbidden)
	}
	if refused := e.events(escrow.AuditFilter{Action: escrow.ActionKeyApprove, Outcome: "denied"}); len(refused) != 2 ||
		refused[0].Detail != "request="+req.ID+"; own request" {
		t.Fatalf("refused approvals = %+v", refused)
	}
	list, _, err := e.db.ListApprovals(e.ctx, escrow.ApprovalFilter{Scope: allScope})
	if err != nil || len(list) != 1 || list[0].ID != req.ID || list[0].Status != escrow.ApprovalPending {
		t.Fatalf("pending list = %+v, %v", list, err)
	}
	if n, err := e.db.CountPendingApprovals(e.ctx, allScope, "helpdesk2@example.com"); err != nil || n != 1 {
		t.Errorf("count for another approver = %d, %v; want 1", n, err)
	}
	if n, err := e.db.CountPendingApprovals(e.ctx, allScope, "helpdesk@example.com"); err != nil || n != 0 {
		t.Errorf("count for the requester = %d, %v; want 0", n, err)
	}

	e.clock.Advance(10 * time.Minute)
	ap, err := e.decide(secondHelpdesk, req.ID, true, "")
	if err != nil {
		t.Fatalf("approve: %v", err)
	}
	if ap.Status != escrow.ApprovalApproved || ap.DecidedBy != "helpdesk2@example.com" || !ap.ExpiresAt.Equal(e.clock.Now().UTC().Add(30*time.Minute)) {
		t.Errorf("approved = %+v", ap)
	}
	_, err = e.decide(adminOrigin, req.ID, false, "")
	wantCode(t, err, escrow.CodeConflict)
	approvals := e.events(escrow.AuditFilter{Action: escrow.ActionKeyApprove, Outcome: "success"})
	if len(approvals) != 1 || approvals[0].Actor.Name != "helpdesk2@example.com" || approvals[0].Detail != "request="+req.ID ||
		approvals[0].DeviceID != en.DeviceID || approvals[0].Ticket != "INC0000042" {
		t.Fatalf("key.approve events = %+v", approvals)
	}

	// Someone else's view is not the requester's approval.
	other := escrow.Origin{Actor: escrow.Actor{Type: escrow.ActorUser, ID: "u3", Name: "helpdesk3@example.com"}, Source: escrow.SourceAPI}
	if d, err := e.db.Disclose(e.ctx, other, en.DeviceID, asHelpdesk("forgotten PIN", ""), allowAll); err != nil || d.Pending == nil || len(d.Keys) != 0 {
		t.Fatalf("another person's view = %+v, %v; want a request of their own", d, err)
	}

	d, err = e.db.Disclose(e.ctx, helpdeskOrigin, en.DeviceID, asHelpdesk("forgotten PIN", "INC0000042"), allowAll)
	if err != nil || d.Pending != nil || len(d.Keys) != 1 || d.Keys[0].Material != xts128.password {
		t.Fatalf("approved view = %+v, %v", d, err)
	}
	reads := e.events(escrow.AuditFilter{Action: escrow.ActionKeyRead})
	if len(reads) != 1 || reads[0].Detail != "request="+req.ID || reads[0].Ticket != "INC0000042" || reads[0].KeyID != xts128.keyID {
		t.Fatalf("key.read events = %+v", reads)
	}
	used, _, err := e.db.ListApprovals(e.ctx, escrow.ApprovalFilter{Requester: "helpdesk@example.com", Scope: allScope})
	if err != nil || len(used) != 1 || used[0].Status != escrow.ApprovalUsed || used[0].UsedAt.IsZero() {
		t.Fatalf("own requests = %+v, %v", used, err)
	}

	// Once: the next view waits for a new request.
	d, err = e.db.Disclose(e.ctx, helpdeskOrigin, en.DeviceID, asHelpdesk("forgotten PIN", ""), allowAll)
	if err != nil || d.Pending == nil || d.Pending.ID == req.ID || len(d.Keys) != 0 {
		t.Fatalf("view after the approved one = %+v, %v", d, err)
	}
	if _, err := e.db.VerifyAudit(e.ctx); err != nil {
		t.Errorf("VerifyAudit: %v", err)
	}
}

// TestApprovalDeniedAndExpired: a denied or lapsed request discloses nothing and cannot be
// decided again; admins are held only when the setting says so; self-service never is.
func TestApprovalDeniedAndExpired(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	en := e.enroll("LT-0042", "alice@example.com")
	e.escrowPassword(en, osVolume, xts128)
	e.settings(map[string]string{"approvalRequired": "true", "approvalTTL": "1h"})
	pending := func() escrow.Approval {
		t.Helper()
		d, err := e.db.Disclose(e.ctx, helpdeskOrigin, en.DeviceID, asHelpdesk("hardware change", ""), allowAll)
		if err != nil || d.Pending == nil || len(d.Keys) != 0 {
			t.Fatalf("Disclose = %+v, %v; want a pending request", d, err)
		}
		return *d.Pending
	}

	req := pending()
	denied, err := e.decide(adminOrigin, req.ID, false, "no ticket for this")
	if err != nil || denied.Status != escrow.ApprovalDenied || denied.DecisionReason != "no ticket for this" {
		t.Fatalf("deny = %+v, %v", denied, err)
	}
	if ev := e.events(escrow.AuditFilter{Action: escrow.ActionKeyDeny}); len(ev) != 1 || ev[0].Reason != "no ticket for this" || ev[0].Detail != "request="+req.ID {
		t.Fatalf("key.deny events = %+v", ev)
	}
	_, err = e.decide(secondHelpdesk, req.ID, true, "")
	wantCode(t, err, escrow.CodeConflict)
	if next := pending(); next.ID == req.ID {
		t.Fatal("a denied request was used again")
	}

	// A pending request lapses; it can no longer be approved.
	e.clock.Advance(time.Hour)
	_, err = e.decide(adminOrigin, req.ID, true, "")
	wantCode(t, err, escrow.CodeConflict)
	lapsed, _, err := e.db.ListApprovals(e.ctx, escrow.ApprovalFilter{Status: escrow.ApprovalExpired, Scope: allScope})
	if err != nil || len(lapsed) != 1 || lapsed[0].Status != escrow.ApprovalExpired {
		t.Fatalf("expired list = %+v, %v", lapsed, err)
	}
	// An approval lapses too, unused.
	req = pending()
	if _, err := e.decide(adminOrigin, req.ID, true, ""); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Hour + time.Second)
	if next := pending(); next.ID == req.ID {
		t.Fatal("an expired approval was used")
	}
	if n := e.countEvents(escrow.AuditFilter{Action: escrow.ActionKeyRead}); n != 0 {
		t.Fatalf("%d key.read events, want 0", n)
	}

	_, err = e.decide(adminOrigin, "no-such-request", true, "")
	wantCode(t, err, escrow.CodeNotFound)
	_, err = e.decide(adminOrigin, req.ID, false, "bad\x00reason")
	wantCode(t, err, escrow.CodeInvalid)

	// Admins view directly until approvalForAdmins; self-service is never held.
	if d, err := e.db.Disclose(e.ctx, adminOrigin, en.DeviceID, asAdmin("other"), allowAll); err != nil || len(d.Keys) != 1 {
		t.Fatalf("admin view = %+v, %v", d, err)
	}
	alice := escrow.Origin{Actor: escrow.Actor{Type: escrow.ActorUser, ID: "u-alice", Name: "alice@example.com"}, Source: escrow.SourceSelfService}
	if d, err := e.db.Disclose(e.ctx, alice, en.DeviceID, escrow.Access{Reason: "forgotten PIN", Role: escrow.RoleUser}, allowAll); err != nil || len(d.Keys) != 1 {
		t.Fatalf("self-service view = %+v, %v", d, err)
	}
	e.settings(map[string]string{"approvalForAdmins": "true"})
	if d, err := e.db.Disclose(e.ctx, adminOrigin, en.DeviceID, asAdmin("other"), allowAll); err != nil || d.Pending == nil || len(d.Keys) != 0 {
		t.Fatalf("admin view with approvalForAdmins = %+v, %v", d, err)
	}
	_, _, err = e.db.RequestApproval(e.ctx, alice, en.DeviceID, escrow.Access{Reason: "x", Role: escrow.RoleUser}, allowAll)
	wantCode(t, err, escrow.CodeConflict)
	if ap, created, err := e.db.RequestApproval(e.ctx, secondHelpdesk, en.DeviceID, asHelpdesk("x", ""), allowAll); err != nil || !created || ap.Status != escrow.ApprovalPending {
		t.Fatalf("RequestApproval = %+v, %v", ap, err)
	}
	_, _, err = e.db.RequestApproval(e.ctx, secondHelpdesk, en.DeviceID, asHelpdesk("x", ""), func(escrow.Device, escrow.Settings) bool { return false })
	wantCode(t, err, escrow.CodeForbidden)
}

// TestTickets: a ticket goes into the events of a view and a rotation, the filter finds them,
// and the rules refuse a missing or non-matching ticket without recording a read.
func TestTickets(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	en := e.enroll("LT-0042", "")
	e.escrowPassword(en, osVolume, xts128)
	e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID)}})

	if _, err := e.db.Disclose(e.ctx, helpdeskOrigin, en.DeviceID, asHelpdesk("forgotten PIN", " INC0001234 "), allowAll); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.RequestRotation(e.ctx, helpdeskOrigin, en.DeviceID, osVolume, asHelpdesk("scheduled", "CHG0000007"), allowDevice); err != nil {
		t.Fatal(err)
	}
	if ev := e.events(escrow.AuditFilter{Ticket: "INC0001234"}); len(ev) != 1 || ev[0].Action != escrow.ActionKeyRead {
		t.Fatalf("events of INC0001234 = %+v", ev)
	}
	if ev := e.events(escrow.AuditFilter{Ticket: "CHG0000007"}); len(ev) != 1 || ev[0].Action != escrow.ActionRotateRequest {
		t.Fatalf("events of CHG0000007 = %+v", ev)
	}

	e.settings(map[string]string{"ticketRequired": "true", "ticketPattern": "^INC[0-9]{7}$"})
	before := e.countEvents(escrow.AuditFilter{})
	for _, tk := range []string{"", "INC12", "INC0001234\n"} {
		d, err := e.db.Disclose(e.ctx, helpdeskOrigin, en.DeviceID, asHelpdesk("forgotten PIN", tk), allowAll)
		wantCode(t, err, escrow.CodeInvalid)
		assertNothingDisclosed(t, d, xts128.password)
		_, err = e.db.RequestRotation(e.ctx, helpdeskOrigin, en.DeviceID, osVolume, asHelpdesk("scheduled", tk), allowDevice)
		wantCode(t, err, escrow.CodeInvalid)
	}
	if after := e.countEvents(escrow.AuditFilter{}); after != before {
		t.Fatalf("refused tickets recorded %d events", after-before)
	}
	if !strings.Contains(escrow.ErrorMessage(func() error {
		_, err := e.db.Disclose(e.ctx, helpdeskOrigin, en.DeviceID, asHelpdesk("forgotten PIN", "INC12"), allowAll)
		return err
	}()), "^INC[0-9]{7}$") {
		t.Error("the refusal does not name the pattern")
	}
	if d, err := e.db.Disclose(e.ctx, helpdeskOrigin, en.DeviceID, asHelpdesk("forgotten PIN", "INC7654321"), allowAll); err != nil || len(d.Keys) != 1 {
		t.Fatalf("matching ticket: %+v, %v", d, err)
	}
	if _, err := e.db.UpdateSettings(e.ctx, adminOrigin, map[string]string{"ticketPattern": "^INC[0-9"}); escrow.ErrorCode(err) != escrow.CodeInvalid ||
		!strings.Contains(escrow.ErrorMessage(err), "ticketPattern") {
		t.Fatalf("bad pattern: %v", err)
	}
}

// TestTicketChain: events without a ticket keep the hash they had before tickets existed, so
// an old chain still verifies; changing a stored ticket breaks verification.
func TestTicketChain(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	en := e.enroll("LT-0042", "")
	e.escrowPassword(en, osVolume, xts128)
	if _, err := e.db.Disclose(e.ctx, helpdeskOrigin, en.DeviceID, asHelpdesk("forgotten PIN", "INC0001234"), allowAll); err != nil {
		t.Fatal(err)
	}
	all := e.events(escrow.AuditFilter{})
	for _, ev := range all {
		if ev.Ticket != "" {
			continue
		}
		// An event without a ticket is encoded exactly as before tickets: fourteen elements.
		if c := audit.Canonical(ev); strings.Count(string(c), `","`) > 13 {
			t.Errorf("seq %d: canonical encoding grew without a ticket: %s", ev.Seq, c)
		}
	}
	if _, err := e.db.VerifyAudit(e.ctx); err != nil {
		t.Fatalf("VerifyAudit: %v", err)
	}
	raw := e.raw()
	seq := e.events(escrow.AuditFilter{Ticket: "INC0001234"})[0].Seq
	e.exec(raw, `UPDATE audit_events SET ticket = 'INC9999999' WHERE seq = $1`, seq)
	_, err := e.db.VerifyAudit(e.ctx)
	var broken *audit.BrokenError
	if !errors.As(err, &broken) || broken.Seq != seq {
		t.Fatalf("VerifyAudit after changing a ticket = %v, want broken at seq %d", err, seq)
	}
	e.exec(raw, `UPDATE audit_events SET ticket = 'INC0001234' WHERE seq = $1`, seq)
	first := all[0].Seq
	e.exec(raw, `UPDATE audit_events SET ticket = 'INC0000001' WHERE seq = $1`, first)
	if _, err := e.db.VerifyAudit(e.ctx); !errors.As(err, &broken) || broken.Seq != first {
		t.Fatalf("VerifyAudit after giving an old event a ticket = %v, want broken at seq %d", err, first)
	}
}

// TestApprovalStepsFailClosed: each step's state change commits with its event or not at all.
// A request whose key.request cannot be written is not made; an approval whose key.approve
// cannot be written is not given; a view whose key.read cannot be written discloses nothing
// and leaves the approval unused.
func TestApprovalStepsFailClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	en := e.enroll("LT-0042", "")
	e.escrowPassword(en, osVolume, xts128)
	e.settings(map[string]string{"approvalRequired": "true"})
	raw := e.raw()
	view := func() (escrow.Disclosure, error) {
		return e.db.Disclose(e.ctx, helpdeskOrigin, en.DeviceID, asHelpdesk("forgotten PIN", ""), allowAll)
	}
	count := func() int {
		t.Helper()
		var n int
		if err := raw.QueryRowContext(e.ctx, `SELECT COUNT(*) FROM approvals`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	e.failAuditWrites(raw, escrow.ActionKeyRequest)
	d, err := view()
	wantCode(t, err, escrow.CodeUnavailable)
	assertNothingDisclosed(t, d, xts128.password)
	if n := count(); n != 0 {
		t.Fatalf("%d requests made without their event", n)
	}
	e.allowAuditWrites(raw)
	d, err = view()
	if err != nil || d.Pending == nil {
		t.Fatalf("view = %+v, %v", d, err)
	}
	id := d.Pending.ID

	e.failAuditWrites(raw, escrow.ActionKeyApprove)
	_, err = e.decide(secondHelpdesk, id, true, "")
	wantCode(t, err, escrow.CodeUnavailable)
	e.allowAuditWrites(raw)
	if d, err := view(); err != nil || d.Pending == nil || d.Pending.Status != escrow.ApprovalPending {
		t.Fatalf("an approval without its event took effect: %+v, %v", d, err)
	}
	if _, err := e.decide(secondHelpdesk, id, true, ""); err != nil {
		t.Fatal(err)
	}

	e.failAuditWrites(raw, escrow.ActionKeyRead)
	d, err = view()
	wantCode(t, err, escrow.CodeUnavailable)
	assertNothingDisclosed(t, d, xts128.password)
	e.allowAuditWrites(raw)
	if d, err := view(); err != nil || len(d.Keys) != 1 {
		t.Fatalf("the approval was used up by a view that failed: %+v, %v", d, err)
	}
}

// TestApprovalQueuePages: the queue lists live requests soonest to lapse first, a page at a
// time, leaving out lapsed ones and requests outside the caller's scope; a person's own list
// is newest first.
func TestApprovalQueuePages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.settings(map[string]string{"approvalRequired": "true", "approvalTTL": "1h"})
	var devices []escrow.Enrolled
	for i := range 4 {
		en := e.enroll(fmt.Sprintf("LT-%04d", i), "")
		devices = append(devices, en)
		e.escrowPassword(en, osVolume, genSample(i))
	}
	lab := devices[3]
	if _, err := e.db.UpdateDevice(e.ctx, adminOrigin, lab.DeviceID, escrow.DeviceChange{Tags: &[]string{"lab"}}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i, en := range devices {
		if i > 0 {
			e.clock.Advance(20 * time.Minute)
		}
		d, err := e.db.Disclose(e.ctx, helpdeskOrigin, en.DeviceID, asHelpdesk("x", ""), allowAll)
		if err != nil || d.Pending == nil {
			t.Fatalf("Disclose = %+v, %v", d, err)
		}
		ids = append(ids, d.Pending.ID)
	}
	// Now the first request has lapsed (60 minutes old); the other three are live.
	var got []string
	cursor := ""
	for {
		page, next, err := e.db.ListApprovals(e.ctx, escrow.ApprovalFilter{Scope: allScope, Limit: 2, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range page {
			got = append(got, a.ID)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if strings.Join(got, ",") != strings.Join(ids[1:], ",") {
		t.Fatalf("queue = %v, want %v", got, ids[1:])
	}
	inLab, _, err := e.db.ListApprovals(e.ctx, escrow.ApprovalFilter{Scope: escrow.Scope{Tags: []string{"lab"}}})
	if err != nil || len(inLab) != 1 || inLab[0].ID != ids[3] {
		t.Fatalf("queue in the lab scope = %+v, %v", inLab, err)
	}
	if n, err := e.db.CountPendingApprovals(e.ctx, escrow.Scope{Tags: []string{"lab"}}, "someone@example.com"); err != nil || n != 1 {
		t.Fatalf("count in the lab scope = %d, %v", n, err)
	}
	mine, _, err := e.db.ListApprovals(e.ctx, escrow.ApprovalFilter{Requester: "helpdesk@example.com", Scope: allScope})
	if err != nil || len(mine) != 4 || mine[0].ID != ids[3] || mine[3].ID != ids[0] || mine[3].Status != escrow.ApprovalExpired {
		t.Fatalf("own requests = %+v, %v", mine, err)
	}
	_, _, err = e.db.ListApprovals(e.ctx, escrow.ApprovalFilter{Scope: allScope, Cursor: "bogus"})
	wantCode(t, err, escrow.CodeInvalid)
}
