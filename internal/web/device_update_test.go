package web_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/escrow"
)

// TestOutOfScopeDevicePagesAudited: a helpdesk limited to a tag opening a device without it
// gets 403 on every device page and form, a path that names no device 404, and each refusal is
// exactly one denied event.
func TestOutOfScopeDevicePagesAudited(t *testing.T) {
	e := newEnv(t)
	e.person(escrow.RoleHelpdesk, "lab@example.com", "lab")
	cookie := e.session("lab@example.com")
	d := e.enroll("LT-0042", "alice@example.com", samples(t, 1)...)
	reason := url.Values{"reason": {"forgotten-pin"}}
	for _, tt := range []struct {
		name, method, path string
		form               url.Values
		action             string
	}{
		{"overview", http.MethodGet, "/devices/" + d.ID, nil, escrow.ActionDeviceRead},
		{"security", http.MethodGet, "/devices/" + d.ID + "/security", nil, escrow.ActionDeviceRead},
		{"rotate form", http.MethodGet, "/devices/" + d.ID + "/rotate", nil, escrow.ActionRotateRequest},
		{"view key", http.MethodPost, "/devices/" + d.ID + "/keys", reason, escrow.ActionKeyRead},
		{"rotate", http.MethodPost, "/devices/" + d.ID + "/rotate", url.Values{"reason": {"test"}}, escrow.ActionRotateRequest},
		{"set tags", http.MethodPost, "/devices/" + d.ID + "/update", url.Values{"tags": {"lab"}}, escrow.ActionDeviceUpdate},
		{"dispute", http.MethodPost, "/devices/" + d.ID + "/dispute", url.Values{"disputed": {"true"}, "reason": {"x"}}, escrow.ActionDeviceDispute},
		{"not a device ID", http.MethodGet, "/devices/LT-0042", nil, escrow.ActionDeviceRead},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(e.events(escrow.AuditFilter{Outcome: string(escrow.OutcomeDenied)}))
			want, deviceID := http.StatusForbidden, d.ID
			if !strings.Contains(tt.path, d.ID) {
				want, deviceID = http.StatusNotFound, ""
			}
			e.do(request{method: tt.method, path: tt.path, cookie: cookie, form: tt.form}).must(t, want)
			ev := e.events(escrow.AuditFilter{Outcome: string(escrow.OutcomeDenied)})
			if len(ev)-before != 1 || ev[len(ev)-1].Action != tt.action || ev[len(ev)-1].DeviceID != deviceID {
				t.Fatalf("denied events after the refusal: %+v, want one %s", ev[before:], tt.action)
			}
		})
	}
	if n := len(e.events(escrow.AuditFilter{Action: escrow.ActionDeviceUpdate, Outcome: string(escrow.OutcomeSuccess)})); n != 0 {
		t.Errorf("a refused change recorded %d device.update events", n)
	}
}

// TestDeviceUpdateForm: the admin's Overview offers the owner and tags form; a bad tag comes
// back as 400 naming it with nothing stored; a good one is saved with one device.update.
func TestDeviceUpdateForm(t *testing.T) {
	e := newEnv(t)
	e.person(escrow.RoleAdmin, "admin@example.com")
	e.person(escrow.RoleHelpdesk, "hd@example.com")
	admin, hd := e.session("admin@example.com"), e.session("hd@example.com")
	d := e.enroll("LT-0042", "alice@example.com")

	if r := e.get("/devices/"+d.ID, hd).must(t, http.StatusOK); strings.Contains(r.body, `action="/devices/`+d.ID+`/update"`) {
		t.Error("a helpdesk is offered the owner and tags form")
	}
	if r := e.get("/devices/"+d.ID, admin).must(t, http.StatusOK); !strings.Contains(r.body, `action="/devices/`+d.ID+`/update"`) {
		t.Error("the admin is not offered the owner and tags form")
	}
	r := e.post("/devices/"+d.ID+"/update", admin, url.Values{"owner": {"alice@example.com"}, "tags": {"ok Bad_tag"}}).must(t, http.StatusBadRequest)
	if !strings.Contains(r.body, "tags[1]:") || !strings.Contains(r.body, `value="ok Bad_tag"`) {
		t.Errorf("the refused form does not name tags[1] or lost the input:\n%s", shortBody(r.body))
	}
	r = e.post("/devices/"+d.ID+"/update", admin, url.Values{"owner": {"bob@example.com"}, "tags": {"lab,berlin"}}).must(t, http.StatusSeeOther)
	if loc := r.header.Get("Location"); loc != "/devices/"+d.ID+"?notice=device-updated" {
		t.Errorf("redirect to %q", loc)
	}
	ev := e.events(escrow.AuditFilter{Action: escrow.ActionDeviceUpdate})
	if len(ev) != 1 || ev[0].Source != escrow.SourceAdminPortal ||
		ev[0].Detail != `device LT-0042: ownerUpn "alice@example.com" -> "bob@example.com"; tags [] -> [berlin lab]` {
		t.Fatalf("device.update events %+v", ev)
	}
	if r := e.get("/devices/"+d.ID+"?notice=device-updated", admin).must(t, http.StatusOK); !strings.Contains(r.body, "berlin, lab") || !strings.Contains(r.body, "bob@example.com") {
		t.Errorf("the Overview does not show the new owner and tags")
	}
}

// TestSelfServiceSkipsDisputedDevice: a device an admin marked disputed is not listed on /my,
// and picking it by ID answers like a device that is not the person's, recorded as denied.
func TestSelfServiceSkipsDisputedDevice(t *testing.T) {
	e := newEnv(t)
	e.person(escrow.RoleUser, "alice@example.com")
	cookie := e.session("alice@example.com")
	ks := samples(t, 2)
	laptop := e.enroll("LT-0042", "alice@example.com", ks[0])
	planted := e.enroll("LT-ALICE", "alice@example.com", ks[1])
	if _, err := e.db.UpdateDevice(t.Context(), testOrigin, planted.ID, escrow.DeviceChange{Disputed: ptrTo(true), DisputeReason: "planted"}); err != nil {
		t.Fatal(err)
	}
	if r := e.get("/my", cookie).must(t, http.StatusOK); !strings.Contains(r.body, laptop.ID) || strings.Contains(r.body, planted.ID) {
		t.Fatalf("/my after the dispute:\n%s", shortBody(r.body))
	}
	r := e.post("/my/key", cookie, url.Values{"deviceId": {planted.ID}, "reason": {"forgotten-pin"}}).must(t, http.StatusNotFound)
	if strings.Contains(r.body, ks[1].Password) || !strings.Contains(r.body, "No recovery key with this key ID was found among your devices") {
		t.Fatalf("picking the disputed device answered:\n%s", shortBody(r.body))
	}
	e.post("/my/key", cookie, url.Values{"keyId": {ks[1].KeyID[:8]}, "reason": {"forgotten-pin"}}).must(t, http.StatusNotFound)
	if ev := e.events(escrow.AuditFilter{Action: escrow.ActionKeyRead}); len(ev) != 2 || ev[0].Outcome != escrow.OutcomeDenied || ev[1].Outcome != escrow.OutcomeDenied {
		t.Fatalf("key.read events %+v, want two denied", ev)
	}
}

func ptrTo[T any](v T) *T { return &v }
