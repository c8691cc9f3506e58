package api_test

import (
	"bytes"
	"encoding/csv"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/bitlockertest"
	"github.com/keyward/keyward/internal/escrow"
)

func TestRetireDevice(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	samples := bitlockertest.Samples(t)
	gone := newAgent(e, "LT-WIPED", "alice@example.com")
	gone.addVolume("C", "C:", samples[0].Password, samples[0].KeyID)
	gone.report()
	e.must(202, e.do("POST", "/api/devices/security/bitlocker/keys/"+gone.d.ID+"/rotate", e.admin, map[string]any{"reason": "scheduled"}))
	kept := newAgent(e, "LT-KEPT", "bob@example.com")
	kept.addVolume("C", "C:", samples[1].Password, samples[1].KeyID)
	kept.report()
	silent := e.enroll("LT-SILENT", "")
	retirePath := "/api/devices/" + gone.d.ID + "/retire"

	// Only admins; every refusal is a denied device.retire event.
	for _, role := range []escrow.Role{escrow.RoleHelpdesk, escrow.RoleAuditor, escrow.RoleUser} {
		tok := e.person(role, string(role)+"@example.com")
		if r := e.do("POST", retirePath, tok, map[string]any{"reason": "wiped"}); r.status != 403 {
			t.Errorf("%s: status %d, want 403: %s", role, r.status, r.body)
		}
	}
	denied := e.auditEvents("action=device.retire&outcome=denied")
	if len(denied) != 3 || denied[0].DeviceID != gone.d.ID {
		t.Errorf("denied device.retire events = %+v, want 3 for the device", denied)
	}

	for _, c := range []struct {
		name string
		body any
		want int
	}{
		{"no body", nil, 400},
		{"no reason", map[string]any{}, 400},
		{"blank reason", map[string]any{"reason": "  "}, 400},
		{"control characters", map[string]any{"reason": "wiped\x00"}, 400},
		{"too long", map[string]any{"reason": strings.Repeat("x", 501)}, 400},
		{"unknown field", map[string]any{"reason": "wiped", "force": true}, 400},
	} {
		if r := e.do("POST", retirePath, e.admin, c.body); r.status != c.want {
			t.Errorf("%s: status %d, want %d: %s", c.name, r.status, c.want, r.body)
		}
	}
	e.must(404, e.do("POST", "/api/devices/00000000-0000-4000-8000-000000000000/retire", e.admin, map[string]any{"reason": "wiped"}))
	e.must(404, e.do("POST", "/api/devices/not-a-device/retire", e.admin, map[string]any{"reason": "wiped"}))
	if n := len(e.auditEvents("action=device.retire&outcome=success")); n != 0 {
		t.Fatalf("%d device.retire events before any retire succeeded", n)
	}

	e.clock.Advance(time.Minute)
	now := e.clock.Now()
	var d struct {
		DeviceID, RetiredBy, RetireReason string
		RetiredAt                         *time.Time
	}
	e.must(200, e.do("POST", retirePath, e.admin, map[string]any{"reason": "wiped and sold"})).json(t, &d)
	if d.DeviceID != gone.d.ID || d.RetiredAt == nil || !d.RetiredAt.Equal(now) || d.RetiredBy != "admin@example.com" || d.RetireReason != "wiped and sold" {
		t.Errorf("retired device = %+v", d)
	}
	if ev := e.auditEvents("action=device.retire&outcome=success"); len(ev) != 1 || ev[0].Reason != "wiped and sold" || ev[0].Source != "api" {
		t.Errorf("device.retire events = %+v", ev)
	}
	if r := e.do("POST", retirePath, e.admin, map[string]any{"reason": "again"}); r.status != 409 {
		t.Errorf("retire twice: status %d, want 409: %s", r.status, r.body)
	}

	// The agent is refused everywhere, like an unknown token.
	for _, c := range []struct{ method, path string }{
		{"POST", "/api/agent/report"}, {"GET", "/api/agent/commands"},
		{"PUT", "/api/agent/keys/" + samples[2].KeyID}, {"POST", "/api/agent/commands/00000000-0000-4000-8000-000000000000/result"},
	} {
		if r := e.do(c.method, c.path, gone.d.Token, map[string]any{}); r.status != 401 {
			t.Errorf("%s %s with the retired device's token: status %d, want 401", c.method, c.path, r.status)
		}
	}
	kept.report()

	// Gone from the device list and the report; listed with retired=true; still readable.
	var list struct {
		Items []struct {
			DeviceID  string
			RetiredAt *time.Time
		}
	}
	e.must(200, e.do("GET", "/api/devices", e.admin, nil)).json(t, &list)
	if len(list.Items) != 2 || list.Items[0].DeviceID != kept.d.ID || list.Items[1].DeviceID != silent.ID {
		t.Errorf("GET /api/devices = %+v, want the two devices in service", list.Items)
	}
	e.must(200, e.do("GET", "/api/devices?retired=false", e.admin, nil))
	e.must(200, e.do("GET", "/api/devices?retired=true", e.admin, nil)).json(t, &list)
	if len(list.Items) != 1 || list.Items[0].DeviceID != gone.d.ID || list.Items[0].RetiredAt == nil {
		t.Errorf("GET /api/devices?retired=true = %+v, want the retired device", list.Items)
	}
	for _, bad := range []string{"yes", "1", "TRUE", "true "} {
		if r := e.do("GET", "/api/devices?retired="+url.QueryEscape(bad), e.admin, nil); r.status != 400 {
			t.Errorf("retired=%q: status %d, want 400", bad, r.status)
		}
	}
	e.must(200, e.do("GET", "/api/devices/"+gone.d.ID, e.admin, nil)).json(t, &d)
	if d.RetiredAt == nil || !d.RetiredAt.Equal(now) {
		t.Errorf("GET the retired device: retiredAt %v", d.RetiredAt)
	}

	var rep struct {
		Total   int
		Counts  map[string]int
		Devices []struct{ DeviceID string }
	}
	e.clock.Advance(2 * time.Hour)
	e.must(200, e.do("GET", "/api/reports/escrow", e.admin, nil)).json(t, &rep)
	sum := 0
	for _, n := range rep.Counts {
		sum += n
	}
	if rep.Total != 2 || sum != 2 || rep.Counts["escrowed"] != 1 || rep.Counts["pending"] != 1 {
		t.Errorf("report total %d, counts %v; want the two devices in service", rep.Total, rep.Counts)
	}
	for _, p := range rep.Devices {
		if p.DeviceID == gone.d.ID {
			t.Errorf("the report lists the retired device")
		}
	}
	r := e.must(200, e.do("GET", "/api/reports/escrow?format=csv", e.admin, nil))
	rows, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1+len(rep.Devices) || strings.Contains(string(r.body), gone.d.ID) {
		t.Errorf("csv %q, want the listed devices without the retired one", rows)
	}

	// The census leaves it out; its key is still a key, superseded.
	m := e.scrape(e.admin)
	total := 0.0
	for _, s := range []escrow.EscrowStatus{escrow.StatusEscrowed, escrow.StatusPending, escrow.StatusFailed, escrow.StatusNotAvailable} {
		total += m.value("keyward_devices", map[string]string{"escrow_status": string(s)})
	}
	if total != 2 || m.value("keyward_devices", map[string]string{"escrow_status": "escrowed"}) != 1 {
		t.Errorf("keyward_devices sum to %v, want the two devices in service", total)
	}
	if got := m.value("keyward_recovery_keys", map[string]string{"status": "superseded"}); got != 1 {
		t.Errorf("keyward_recovery_keys{status=superseded} = %v, want 1", got)
	}

	// The key listing still shows its key; the key view still discloses it, with a reason.
	var keys struct{ Items []keyItem }
	e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys?deviceId="+gone.d.ID, e.admin, nil)).json(t, &keys)
	if len(keys.Items) != 1 || keys.Items[0].Status != "superseded" || keys.Items[0].RetainUntil == nil ||
		!keys.Items[0].RetainUntil.Equal(now.Add(7*24*time.Hour)) {
		t.Errorf("keys of the retired device = %+v", keys.Items)
	}
	e.must(400, e.do("GET", "/api/devices/security/bitlocker/keys/"+gone.d.ID, e.admin, nil))
	var view struct{ Keys []keyItem }
	e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys/"+gone.d.ID+"?reason=audit+of+a+sold+laptop", e.admin, nil)).json(t, &view)
	if len(view.Keys) != 1 || view.Keys[0].RecoveryPassword != samples[0].Password {
		t.Errorf("key view of the retired device = %d keys", len(view.Keys))
	}

	// Enrollment is unaffected.
	e.enroll("LT-NEW", "")
}
