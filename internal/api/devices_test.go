package api_test

import (
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/bitlockertest"
	"github.com/keyward/keyward/internal/escrow"
)

type deviceOut struct {
	DeviceID, DeviceName, OwnerUPN, SerialNumber string
	Tags                                         []string
	DisputedAt                                   *time.Time
	DisputedBy, DisputeReason                    string
	Volumes                                      []struct {
		VolumeID, LockStatus string
		KeyProtectors        []struct{ KeyID string }
	}
}

// TestDevicePatch sets a device's owner and tags through PATCH /api/devices/{deviceId}: one
// device.update event with the old and new values; bad input is a 400 naming the field and
// changes nothing; only admins may. A helpdesk scoped to a tag sees the device once it carries
// the tag, and the previous owner loses it when the owner changes.
func TestDevicePatch(t *testing.T) {
	e := newEnv(t)
	d := e.enroll("LT-0042", "alice@example.com")
	path := "/api/devices/" + d.ID
	helpdesk := e.person(escrow.RoleHelpdesk, "hd@example.com", "lab")
	alice := e.person(escrow.RoleUser, "alice@example.com")
	bob := e.person(escrow.RoleUser, "bob@example.com")

	e.must(403, e.do("GET", path, helpdesk, nil))
	e.must(200, e.do("GET", path, alice, nil))

	for _, tt := range []struct {
		name, body, field string
	}{
		{"upper-case tag", `{"tags": ["Lab"]}`, "tags[0]:"},
		{"tag with a space", `{"tags": ["lab", "a b"]}`, "tags[1]:"},
		{"empty tag", `{"tags": [""]}`, "tags[0]:"},
		{"long tag", `{"tags": ["` + strings.Repeat("a", 65) + `"]}`, "tags[0]:"},
		{"too many tags", `{"tags": [` + strings.TrimSuffix(strings.Repeat(`"t",`, 33), ",") + `]}`, "tags:"},
		{"look-alike owner", `{"ownerUpn": "ſam@example.com"}`, "ownerUpn:"},
		{"owner that is no UPN", `{"ownerUpn": "sam"}`, "ownerUpn:"},
		{"unknown field", `{"owner": "sam@example.com"}`, "owner"},
		{"nothing to change", `{}`, "body:"},
		{"dispute without a reason", `{"disputed": true}`, "reason:"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := e.must(400, e.do("PATCH", path, e.admin, tt.body))
			if msg := r.errorMessage(t); !strings.Contains(msg, tt.field) {
				t.Errorf("message %q does not name %s", msg, tt.field)
			}
		})
	}
	e.must(403, e.do("PATCH", path, helpdesk, `{"tags": ["lab"]}`))
	e.must(404, e.do("PATCH", "/api/devices/00000000-0000-4000-8000-000000000000", e.admin, `{"tags": ["lab"]}`))
	if ev := e.auditEvents("action=device.update&outcome=success"); len(ev) != 0 {
		t.Fatalf("refused changes recorded device.update: %+v", ev)
	}
	if ev := e.auditEvents("action=device.update&outcome=denied"); len(ev) != 2 {
		t.Fatalf("denied device.update events = %+v, want the helpdesk's and the unknown device's", ev)
	}

	var got deviceOut
	e.must(200, e.do("PATCH", path, e.admin, `{"ownerUpn": " Bob@Example.com ", "tags": ["lab", "berlin-2", "lab"]}`)).json(t, &got)
	if got.OwnerUPN != "bob@example.com" || strings.Join(got.Tags, ",") != "berlin-2,lab" {
		t.Fatalf("PATCH answered owner %q tags %q", got.OwnerUPN, got.Tags)
	}
	ev := e.auditEvents("action=device.update&outcome=success")
	if len(ev) != 1 || ev[0].DeviceID != d.ID || ev[0].Source != "api" ||
		!strings.Contains(ev[0].Detail, `ownerUpn "alice@example.com" -> "bob@example.com"`) || !strings.Contains(ev[0].Detail, "tags [] -> [berlin-2 lab]") {
		t.Fatalf("device.update events = %+v", ev)
	}
	e.must(200, e.do("GET", path, helpdesk, nil))
	var list struct{ Items []deviceOut }
	e.must(200, e.do("GET", "/api/devices", helpdesk, nil)).json(t, &list)
	if len(list.Items) != 1 || list.Items[0].DeviceID != d.ID {
		t.Errorf("helpdesk scoped to lab lists %+v", list.Items)
	}
	e.must(403, e.do("GET", path, alice, nil))
	e.must(200, e.do("GET", path, bob, nil))

	// The same again changes nothing and records nothing; "" clears the owner, [] the tags.
	e.must(200, e.do("PATCH", path, e.admin, `{"ownerUpn": "bob@example.com", "tags": ["lab", "berlin-2"]}`))
	if n := len(e.auditEvents("action=device.update&outcome=success")); n != 1 {
		t.Errorf("%d device.update events after a change to the same values", n)
	}
	e.must(200, e.do("PATCH", path, e.admin, `{"ownerUpn": "", "tags": []}`)).json(t, &got)
	if got.OwnerUPN != "" || len(got.Tags) != 0 {
		t.Errorf("cleared device: owner %q tags %q", got.OwnerUPN, got.Tags)
	}
	e.must(403, e.do("GET", path, helpdesk, nil))
	e.must(403, e.do("GET", path, bob, nil))
}

// TestRefusalsAudited: every refusal of a key or device route is one denied event, for a
// helpdesk outside its tag scope and for a rotation of a volume the device does not have.
func TestRefusalsAudited(t *testing.T) {
	e := newEnv(t)
	s := bitlockertest.Samples(t)[0]
	d := e.enroll("LT-0042", "alice@example.com")
	e.must(201, e.do("PUT", "/api/agent/keys/"+s.KeyID, d.Token, escrowBody("C", s.Password)))
	e.report(d, volumeReport{VolumeID: "C", MountPoint: "C:", VolumeType: "operatingSystem", ProtectionStatus: "on", EncryptionStatus: "fullyEncrypted",
		KeyProtectors: []map[string]any{{"keyId": s.KeyID, "type": "recoveryPassword"}}})
	helpdesk := e.person(escrow.RoleHelpdesk, "hd@example.com", "lab")
	for _, tt := range []struct {
		name, method, path, token string
		body                      any
		status                    int
		action                    string
	}{
		{"device out of scope", "GET", "/api/devices/" + d.ID, helpdesk, nil, 403, escrow.ActionDeviceRead},
		{"unknown device", "GET", "/api/devices/00000000-0000-4000-8000-000000000000", helpdesk, nil, 404, escrow.ActionDeviceRead},
		{"not a device ID", "GET", "/api/devices/LT-0042", helpdesk, nil, 404, escrow.ActionDeviceRead},
		{"keys of no device ID", "GET", "/api/devices/security/bitlocker/keys/LT-0042?reason=test", helpdesk, nil, 404, escrow.ActionKeyRead},
		{"keys out of scope", "GET", "/api/devices/security/bitlocker/keys/" + d.ID + "?reason=test", helpdesk, nil, 403, escrow.ActionKeyRead},
		{"rotate out of scope", "POST", "/api/devices/security/bitlocker/keys/" + d.ID + "/rotate", helpdesk, nil, 403, escrow.ActionRotateRequest},
		{"rotate unknown volume", "POST", "/api/devices/security/bitlocker/keys/" + d.ID + "/rotate", e.admin, map[string]string{"volumeId": "Z"}, 404, escrow.ActionRotateRequest},
		{"retire unknown device", "POST", "/api/devices/00000000-0000-4000-8000-000000000000/retire", e.admin, map[string]string{"reason": "gone"}, 404, escrow.ActionDeviceRetire},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(e.auditEvents("outcome=denied"))
			e.must(tt.status, e.do(tt.method, tt.path, tt.token, tt.body))
			ev := e.auditEvents("outcome=denied")
			if len(ev)-before != 1 || ev[0].Action != tt.action {
				t.Fatalf("denied events after the refusal: %+v (had %d), want one %s", ev, before, tt.action)
			}
		})
	}
}

// TestRotationCompletedWithOldKeyRefused: a device reporting a rotation completed with the
// key ID it was meant to replace gets 409, the rotation stays open and the old key active.
func TestRotationCompletedWithOldKeyRefused(t *testing.T) {
	e := newEnv(t)
	ss := bitlockertest.Samples(t)
	old, fresh := ss[0], ss[1]
	d := e.enroll("LT-0042", "")
	e.must(201, e.do("PUT", "/api/agent/keys/"+old.KeyID, d.Token, escrowBody("C", old.Password)))
	e.report(d, volumeReport{VolumeID: "C", MountPoint: "C:", VolumeType: "operatingSystem", ProtectionStatus: "on", EncryptionStatus: "fullyEncrypted",
		KeyProtectors: []map[string]any{{"keyId": old.KeyID, "type": "recoveryPassword"}}})
	e.must(202, e.do("POST", "/api/devices/security/bitlocker/keys/"+d.ID+"/rotate", e.admin, nil))
	var cmds struct{ Items []struct{ ID, KeyID string } }
	e.must(200, e.do("GET", "/api/agent/commands", d.Token, nil)).json(t, &cmds)
	if len(cmds.Items) != 1 || cmds.Items[0].KeyID != old.KeyID {
		t.Fatalf("commands %+v", cmds.Items)
	}
	result := "/api/agent/commands/" + cmds.Items[0].ID + "/result"

	r := e.must(409, e.do("POST", result, d.Token, map[string]string{"status": "completed", "newKeyId": old.KeyID}))
	if !strings.Contains(r.errorMessage(t), "newKeyId") {
		t.Errorf("message %q does not name newKeyId", r.errorMessage(t))
	}
	e.must(200, e.do("GET", "/api/agent/commands", d.Token, nil)).json(t, &cmds)
	if len(cmds.Items) != 1 {
		t.Fatalf("the rotation did not stay open: commands %+v", cmds.Items)
	}
	var keys struct{ Items []keyItem }
	e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys?deviceId="+d.ID, e.admin, nil)).json(t, &keys)
	if len(keys.Items) != 1 || keys.Items[0].Status != "active" {
		t.Fatalf("keys after the refused completion: %+v", keys.Items)
	}
	if ev := e.auditEvents("action=key.rotate.complete&outcome=denied"); len(ev) != 1 || ev[0].KeyID != old.KeyID {
		t.Errorf("denied key.rotate.complete events = %+v", ev)
	}

	// The real completion still works.
	e.must(201, e.do("PUT", "/api/agent/keys/"+fresh.KeyID, d.Token, escrowBody("C", fresh.Password)))
	e.must(200, e.do("POST", result, d.Token, map[string]string{"status": "completed", "newKeyId": fresh.KeyID}))
	e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys?deviceId="+d.ID+"&keyId="+old.KeyID, e.admin, nil)).json(t, &keys)
	if len(keys.Items) != 1 || keys.Items[0].Status != "superseded" {
		t.Errorf("old key after the rotation: %+v", keys.Items)
	}
}

// TestReportLockStatus: lockStatus is validated (400 naming the field), stored and shown in
// the device's volumes; a locked volume's report, or an encrypted one with no protectors,
// leaves its key active; an unlocked one lacking the key supersedes it.
func TestReportLockStatus(t *testing.T) {
	e := newEnv(t)
	s := bitlockertest.Samples(t)[0]
	d := e.enroll("LT-0042", "")
	body := escrowBody("D", s.Password)
	body["mountPoint"], body["volumeType"] = "D:", "fixedData"
	e.must(201, e.do("PUT", "/api/agent/keys/"+s.KeyID, d.Token, body))
	data := func(lock string, keyIDs ...string) volumeReport {
		v := volumeReport{VolumeID: "D", MountPoint: "D:", VolumeType: "fixedData", ProtectionStatus: "on", EncryptionStatus: "fullyEncrypted", LockStatus: lock}
		for _, id := range keyIDs {
			v.KeyProtectors = append(v.KeyProtectors, map[string]any{"keyId": id, "type": "recoveryPassword"})
		}
		return v
	}
	keyStatus := func() string {
		var keys struct{ Items []keyItem }
		e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys?deviceId="+d.ID, e.admin, nil)).json(t, &keys)
		if len(keys.Items) != 1 {
			t.Fatalf("keys %+v", keys.Items)
		}
		return keys.Items[0].Status
	}
	e.report(d, data("unlocked", s.KeyID))

	r := e.must(400, e.do("POST", "/api/agent/report", d.Token, map[string]any{"volumes": []volumeReport{data("LOCKED", s.KeyID)}}))
	if msg := r.errorMessage(t); msg != "volumes[0].lockStatus: must be unlocked or locked" {
		t.Errorf("message %q", msg)
	}
	e.report(d, data("locked"))
	var got deviceOut
	e.must(200, e.do("GET", "/api/devices/"+d.ID, e.admin, nil)).json(t, &got)
	if len(got.Volumes) != 1 || got.Volumes[0].LockStatus != "locked" || len(got.Volumes[0].KeyProtectors) != 1 {
		t.Fatalf("volumes after a locked report: %+v", got.Volumes)
	}
	if st := keyStatus(); st != "active" {
		t.Fatalf("key of a locked volume is %s", st)
	}
	e.report(d, data(""))
	if st := keyStatus(); st != "active" {
		t.Fatalf("key of an encrypted volume reported with no protectors is %s", st)
	}
	e.report(d, data("unlocked", "D47A0C11-2B3C-4D5E-8F60-718293A4B5C6"))
	if st := keyStatus(); st != "superseded" {
		t.Fatalf("key missing from an unlocked volume's list is %s, want superseded", st)
	}
}

// TestDuplicateKeyID: a key ID escrowed by a second device is named in the escrow's audit
// event; the key listing tells the devices apart; a disputed device leaves self-service.
func TestDuplicateKeyID(t *testing.T) {
	e := newEnv(t)
	s := bitlockertest.Samples(t)[0]
	real := e.enroll("LT-0042", "alice@example.com")
	e.clock.Advance(time.Hour)
	planted := e.enroll("LT-ALICE", "alice@example.com")
	e.must(201, e.do("PUT", "/api/agent/keys/"+s.KeyID, real.Token, escrowBody("C", s.Password)))
	junk := bitlockertest.Samples(t)[1].Password
	e.must(201, e.do("PUT", "/api/agent/keys/"+s.KeyID, planted.Token, escrowBody("C", junk)))

	ev := e.auditEvents("action=key.escrow&deviceId=" + planted.ID)
	if len(ev) != 1 || !strings.Contains(ev[0].Detail, "also escrowed by device LT-0042 ("+real.ID+", serial SN-LT-0042)") {
		t.Fatalf("key.escrow of the second holder = %+v", ev)
	}
	if ev := e.auditEvents("action=key.escrow&deviceId=" + real.ID); len(ev) != 1 || strings.Contains(ev[0].Detail, "also escrowed") {
		t.Fatalf("key.escrow of the first holder = %+v", ev)
	}

	type listed struct {
		DeviceID, SerialNumber      string
		CreatedAt, DeviceEnrolledAt time.Time
		DeviceLastSeenAt            time.Time
		DeviceDisputed              bool
		SharedWith                  []struct{ DeviceID, DeviceName string }
	}
	list := func(token string) []listed {
		var out struct{ Items []listed }
		e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys?keyId="+s.KeyID[:8], token, nil)).json(t, &out)
		return out.Items
	}
	items := list(e.admin)
	if len(items) != 2 {
		t.Fatalf("listing by key ID: %+v", items)
	}
	for _, it := range items {
		other := real.ID
		if it.DeviceID == real.ID {
			other = planted.ID
		}
		if it.SerialNumber == "" || it.DeviceEnrolledAt.IsZero() || it.DeviceLastSeenAt.IsZero() || it.CreatedAt.IsZero() ||
			len(it.SharedWith) != 1 || it.SharedWith[0].DeviceID != other {
			t.Errorf("listed key %+v: want serial, enrollment, last seen, escrow time and the other holder", it)
		}
	}
	if !items[1].DeviceEnrolledAt.After(items[0].DeviceEnrolledAt) {
		t.Errorf("enrollment times do not tell the devices apart: %+v", items)
	}

	alice := e.person(escrow.RoleUser, "alice@example.com")
	if n := len(list(alice)); n != 2 {
		t.Fatalf("self-service lists %d keys before the dispute", n)
	}
	var got deviceOut
	e.must(200, e.do("PATCH", "/api/devices/"+planted.ID, e.admin, map[string]any{"disputed": true, "reason": "not a company laptop"})).json(t, &got)
	if got.DisputedAt == nil || got.DisputedBy != "admin@example.com" || got.DisputeReason != "not a company laptop" {
		t.Fatalf("disputed device: %+v", got)
	}
	if ev := e.auditEvents("action=device.dispute"); len(ev) != 1 || ev[0].Reason != "not a company laptop" || ev[0].DeviceID != planted.ID {
		t.Fatalf("device.dispute events = %+v", ev)
	}
	if items := list(alice); len(items) != 1 || items[0].DeviceID != real.ID {
		t.Fatalf("self-service lists %+v after the dispute", items)
	}
	e.must(403, e.do("GET", "/api/devices/security/bitlocker/keys/"+planted.ID+"?reason=test", alice, nil))
	if items := list(e.admin); len(items) != 2 || !items[1].DeviceDisputed {
		t.Fatalf("admin listing after the dispute: %+v", items)
	}

	e.must(200, e.do("PATCH", "/api/devices/"+planted.ID, e.admin, map[string]any{"disputed": false})).json(t, &got)
	if got.DisputedAt != nil || len(e.auditEvents("action=device.dispute")) != 2 {
		t.Fatalf("clearing the dispute: %+v", got)
	}
	if n := len(list(alice)); n != 2 {
		t.Errorf("self-service lists %d keys after the dispute was cleared", n)
	}
}
