package api_test

import (
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/bitlockertest"
)

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	d := e.enroll("LT-0042", "alice@example.com")
	s := bitlockertest.Samples(t)[0]
	keyPath := "/api/agent/keys/" + s.KeyID
	cases := []struct {
		name, method, path, token string
		body                      any
		status                    int
		names                     string // the message must name this
	}{
		{"unknown field", "PUT", keyPath, d.Token, `{"volumeId":"C","volumeType":"operatingSystem","kind":"recoveryPassword","recoveryPassword":"` + s.Password + `","color":"red"}`, 400, "color"},
		{"wrong type", "PUT", keyPath, d.Token, `{"volumeId":7}`, 400, "volumeId"},
		{"not JSON", "PUT", keyPath, d.Token, `{"volumeId":`, 400, "body"},
		{"two objects", "PUT", keyPath, d.Token, `{} {}`, 400, "body"},
		{"too large", "PUT", keyPath, d.Token, `{"volumeId":"` + strings.Repeat("x", 70<<10) + `"}`, 413, "body"},
		{"missing volume", "PUT", keyPath, d.Token, escrowBody("", s.Password), 400, "volumeId"},
		{"bad volume type", "PUT", keyPath, d.Token, map[string]any{"volumeId": "C", "volumeType": "floppy", "kind": "recoveryPassword", "recoveryPassword": s.Password}, 400, "volumeType"},
		{"bad kind", "PUT", keyPath, d.Token, map[string]any{"volumeId": "C", "volumeType": "fixedData", "kind": "pin", "recoveryPassword": s.Password}, 400, "kind"},
		{"password and key", "PUT", keyPath, d.Token, map[string]any{"volumeId": "C", "volumeType": "fixedData", "kind": "recoveryPassword", "recoveryPassword": s.Password, "recoveryKey": strings.Repeat("AB", 32)}, 400, "recoveryPassword"},
		{"bad recovery key", "PUT", keyPath, d.Token, map[string]any{"volumeId": "C", "volumeType": "removable", "kind": "recoveryKey", "recoveryKey": "abc"}, 400, "recoveryKey"},
		{"bad key ID", "PUT", "/api/agent/keys/not-a-guid", d.Token, escrowBody("C", s.Password), 400, "keyId"},
		{"seven blocks", "PUT", keyPath, d.Token, escrowBody("C", s.Password[:48]), 400, "recoveryPassword"},
		{"no token", "PUT", keyPath, "", escrowBody("C", s.Password), 401, "Authorization"},
		{"API token on agent route", "PUT", keyPath, e.admin, escrowBody("C", s.Password), 401, "token"},
		{"device token on people route", "GET", "/api/devices", d.Token, nil, 401, "token"},
		{"forged token", "GET", "/api/devices", "kwt_0123456789abcdef_" + strings.Repeat("A", 43), nil, 401, "token"},
		{"bad enrollment token", "POST", "/api/agent/enroll", "", map[string]any{"enrollmentToken": "nope", "hostname": "X"}, 401, "enrollmentToken"},
		{"unknown list filter", "GET", "/api/devices/security/bitlocker/keys?deviceid=" + d.ID, e.admin, nil, 400, "deviceid"},
		{"bad limit", "GET", "/api/devices?limit=0", e.admin, nil, 400, "limit"},
		{"bad escrow status", "GET", "/api/devices?escrowStatus=fine", e.admin, nil, 400, "escrowStatus"},
		{"bad report", "POST", "/api/agent/report", d.Token, map[string]any{"volumes": []map[string]any{{"volumeId": "C", "volumeType": "operatingSystem", "protectionStatus": "maybe", "encryptionStatus": "fullyEncrypted", "keyProtectors": []any{}}}}, 400, "volumes[0].protectionStatus"},
		{"bad command result", "POST", "/api/agent/commands/6f1d0f0e-0000-4000-8000-000000000000/result", d.Token, map[string]any{"status": "done"}, 400, "status"},
		{"unknown command", "POST", "/api/agent/commands/6f1d0f0e-0000-4000-8000-000000000000/result", d.Token, map[string]any{"status": "failed"}, 404, "command"},
		{"bad enrollment expiry", "POST", "/api/enrollment-tokens", e.admin, map[string]any{"expires": "soon"}, 400, "expires"},
		{"unknown endpoint", "GET", "/api/nothing", e.admin, nil, 404, "/api/nothing"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.must(c.status, e.do(c.method, c.path, c.token, c.body))
			if msg := r.errorMessage(t); !strings.Contains(msg, c.names) {
				t.Errorf("message %q does not name %q", msg, c.names)
			}
			if strings.Contains(string(r.body), s.Password[:13]) {
				t.Errorf("the answer repeats material: %s", r.body)
			}
		})
	}
	// Nothing of the refused requests was stored.
	var list struct{ Items []keyItem }
	e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys", e.admin, nil)).json(t, &list)
	if len(list.Items) != 0 {
		t.Fatalf("refused requests stored %d keys", len(list.Items))
	}
	var dev struct{ Volumes []any }
	e.must(200, e.do("GET", "/api/devices/"+d.ID, e.admin, nil)).json(t, &dev)
	if len(dev.Volumes) != 0 {
		t.Fatalf("refused requests stored volumes: %+v", dev.Volumes)
	}
	// Each bad token was a denied attempt on record.
	if n := len(e.auditEvents("action=auth.token&outcome=denied")); n < 3 {
		t.Fatalf("%d denied auth.token events, want at least 3", n)
	}
}

func TestEnrollmentTokenUses(t *testing.T) {
	e := newEnv(t)
	var tok struct{ ID, Token string }
	e.must(201, e.do("POST", "/api/enrollment-tokens", e.admin, map[string]any{"uses": 2, "expires": "7d"})).json(t, &tok)
	if !strings.HasPrefix(tok.Token, "kwe_") || tok.ID == "" {
		t.Fatalf("token answer %+v", tok)
	}
	body := map[string]any{"enrollmentToken": tok.Token, "hostname": "LT-1"}
	e.must(201, e.do("POST", "/api/agent/enroll", "", body))
	e.must(201, e.do("POST", "/api/agent/enroll", "", body))
	e.must(401, e.do("POST", "/api/agent/enroll", "", body))
	if n := len(e.auditEvents("action=device.enroll&outcome=denied")); n != 1 {
		t.Fatalf("%d denied enrollments on record, want 1", n)
	}
	e.must(403, e.do("POST", "/api/enrollment-tokens", e.person("helpdesk", "hd@example.com"), nil))
}
