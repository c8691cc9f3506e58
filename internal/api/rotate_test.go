package api_test

import (
	"testing"

	"github.com/keyward/keyward/internal/bitlockertest"
	"github.com/keyward/keyward/internal/escrow"
)

func TestRotate(t *testing.T) {
	e := newEnv(t)
	s := bitlockertest.Samples(t)[0]
	d := e.enroll("LT-0042", "alice@example.com")
	e.must(201, e.do("PUT", "/api/agent/keys/"+s.KeyID, d.Token, escrowBody("C", s.Password)))
	e.report(d, volumeReport{VolumeID: "C", MountPoint: "C:", VolumeType: "operatingSystem", ProtectionStatus: "on", EncryptionStatus: "fullyEncrypted",
		KeyProtectors: []map[string]any{{"keyId": s.KeyID, "type": "recoveryPassword"}, {"keyId": "53465F4B-98AB-45E2-823D-1F93C0911081", "type": "tpm"}}})

	var rot struct {
		Items []struct{ ID, DeviceID, VolumeID, KeyID, Status, Trigger, Reason string }
	}
	e.must(202, e.do("POST", "/api/devices/security/bitlocker/keys/"+d.ID+"/rotate", e.admin, map[string]string{"reason": "employee left"})).json(t, &rot)
	if len(rot.Items) != 1 || rot.Items[0].Status != "requested" || rot.Items[0].KeyID != s.KeyID || rot.Items[0].Trigger != "manual" {
		t.Fatalf("rotate answered %+v", rot)
	}
	var cmds struct {
		Items []struct{ ID, Type, VolumeID, KeyID string }
	}
	e.must(200, e.do("GET", "/api/agent/commands", d.Token, nil)).json(t, &cmds)
	if len(cmds.Items) != 1 || cmds.Items[0].ID != rot.Items[0].ID || cmds.Items[0].Type != "rotateRecoveryPassword" || cmds.Items[0].VolumeID != "C" {
		t.Fatalf("commands %+v", cmds)
	}
	if n := len(e.auditEvents("action=key.rotate.request&deviceId=" + d.ID)); n != 1 {
		t.Fatalf("%d key.rotate.request events, want 1", n)
	}

	t.Run("helpdesk may, auditor may not", func(t *testing.T) {
		e.must(202, e.do("POST", "/api/devices/security/bitlocker/keys/"+d.ID+"/rotate", e.person(escrow.RoleHelpdesk, "hd@example.com"), nil))
		e.must(403, e.do("POST", "/api/devices/security/bitlocker/keys/"+d.ID+"/rotate", e.person(escrow.RoleAuditor, "au@example.com"), nil))
		e.must(403, e.do("POST", "/api/devices/security/bitlocker/keys/"+d.ID+"/rotate", e.person(escrow.RoleUser, "alice@example.com"), nil))
	})

	t.Run("unknown volume", func(t *testing.T) {
		e.must(404, e.do("POST", "/api/devices/security/bitlocker/keys/"+d.ID+"/rotate", e.admin, map[string]string{"volumeId": "D"}))
	})

	t.Run("BitLocker off everywhere", func(t *testing.T) {
		off := e.enroll("LT-PLAIN", "bob@example.com")
		e.report(off,
			volumeReport{VolumeID: "C", MountPoint: "C:", VolumeType: "operatingSystem", ProtectionStatus: "off", EncryptionStatus: "fullyDecrypted"},
			volumeReport{VolumeID: "E", MountPoint: "E:", VolumeType: "fixedData", ProtectionStatus: "off", EncryptionStatus: "fullyDecrypted"})
		r := e.must(409, e.do("POST", "/api/devices/security/bitlocker/keys/"+off.ID+"/rotate", e.admin, nil))
		if r.errorCode(t) != "not_encrypted" {
			t.Fatalf("code %q, want not_encrypted", r.errorCode(t))
		}
		var cmds struct{ Items []any }
		e.must(200, e.do("GET", "/api/agent/commands", off.Token, nil)).json(t, &cmds)
		if len(cmds.Items) != 0 {
			t.Fatalf("a device with BitLocker off got commands: %+v", cmds.Items)
		}
	})
}
