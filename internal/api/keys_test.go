package api_test

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/bitlockertest"
	"github.com/keyward/keyward/internal/escrow"
)

func TestEscrowRealPasswords(t *testing.T) {
	e := newEnv(t)
	d := e.enroll("LT-0042", "alice@example.com")
	samples := bitlockertest.Samples(t)
	for _, s := range samples {
		// The recovery screen and cryptsetup print the GUID in different cases; the agent may
		// send either.
		path := "/api/agent/keys/" + strings.ToLower(s.KeyID)
		e.must(201, e.do("PUT", path, d.Token, escrowBody("vol-"+s.Image, s.Password)))
		e.must(200, e.do("PUT", path, d.Token, escrowBody("vol-"+s.Image, s.Password)))
		// The same password without hyphens is the same material.
		e.must(200, e.do("PUT", path, d.Token, escrowBody("vol-"+s.Image, strings.ReplaceAll(s.Password, "-", ""))))
	}
	// Different, valid material for a key ID already held.
	other := samples[1].Password
	r := e.must(409, e.do("PUT", "/api/agent/keys/"+samples[0].KeyID, d.Token, escrowBody("vol-"+samples[0].Image, other)))
	if r.errorCode(t) != "conflict" {
		t.Fatalf("409 code %q, want conflict", r.errorCode(t))
	}

	var list struct{ Items []keyItem }
	e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys?limit=1000&deviceId="+d.ID, e.admin, nil)).json(t, &list)
	if len(list.Items) != len(samples) {
		t.Fatalf("%d keys listed, want %d", len(list.Items), len(samples))
	}
	// Still the original material after the refused overwrite.
	var view struct{ Keys []keyItem }
	e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys/"+d.ID+"?reason=forgotten+PIN", e.admin, nil)).json(t, &view)
	got := map[string]string{}
	for _, k := range view.Keys {
		got[k.KeyID] = k.RecoveryPassword
	}
	for _, s := range samples {
		if got[s.KeyID] != s.Password {
			t.Errorf("key %s: view returned %q, want the escrowed password", s.KeyID, got[s.KeyID])
		}
	}
}

func TestEscrowRejectsBadBlockAndStoresNothing(t *testing.T) {
	e := newEnv(t)
	d := e.enroll("LT-0042", "alice@example.com")
	good := "235818-357951-253979-013365-241120-245575-342914-591910"
	before := len(e.auditEvents(""))
	for block := 1; block <= 8; block++ {
		parts := strings.Split(good, "-")
		var n int
		fmt.Sscan(parts[block-1], &n)
		parts[block-1] = fmt.Sprintf("%06d", n+1) // no longer a multiple of 11
		bad := strings.Join(parts, "-")
		t.Run(fmt.Sprintf("block %d", block), func(t *testing.T) {
			r := e.must(400, e.do("PUT", "/api/agent/keys/64311DEA-4587-4029-924A-BA299647998E", d.Token, escrowBody("v1", bad)))
			msg := r.errorMessage(t)
			if !strings.Contains(msg, fmt.Sprintf("block %d", block)) {
				t.Errorf("message %q does not name block %d", msg, block)
			}
			if strings.Contains(string(r.body), parts[block-1]) {
				t.Errorf("answer repeats the bad block's digits: %s", r.body)
			}
		})
	}
	var list struct{ Items []keyItem }
	e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys", e.admin, nil)).json(t, &list)
	if len(list.Items) != 0 {
		t.Fatalf("%d keys stored after refused escrows", len(list.Items))
	}
	var escrows int
	for _, ev := range e.auditEvents("action=key.escrow") {
		escrows++
		_ = ev
	}
	if escrows != 0 || len(e.auditEvents(""))-before != 1 { // only the key.list just made
		t.Fatalf("refused escrows left %d key.escrow events", escrows)
	}
}

func TestListKeys(t *testing.T) {
	e := newEnv(t)
	samples := bitlockertest.Samples(t)
	devices := []device{e.enroll("LT-0001", "alice@example.com"), e.enroll("LT-0002", "bob@example.com")}
	for i, s := range samples {
		d := devices[i%2]
		e.must(201, e.do("PUT", "/api/agent/keys/"+s.KeyID, d.Token, escrowBody("vol-"+s.Image, s.Password)))
	}

	t.Run("never material", func(t *testing.T) {
		r := e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys?limit=1000", e.admin, nil))
		for _, s := range samples {
			if strings.Contains(string(r.body), s.Password) || strings.Contains(string(r.body), strings.ReplaceAll(s.Password, "-", "")) {
				t.Fatalf("the list carries material of %s", s.KeyID)
			}
		}
		if strings.Contains(string(r.body), "recoveryPassword\":") {
			t.Fatalf("the list has a recoveryPassword field: %s", r.body)
		}
	})

	t.Run("8-character prefix", func(t *testing.T) {
		s := samples[3]
		var list struct{ Items []keyItem }
		// Typed as on the recovery screen, in either case.
		e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys?keyId="+strings.ToLower(s.KeyID[:8]), e.admin, nil)).json(t, &list)
		if len(list.Items) != 1 || list.Items[0].KeyID != s.KeyID {
			t.Fatalf("prefix %s found %+v", s.KeyID[:8], list.Items)
		}
	})

	t.Run("short prefix refused", func(t *testing.T) {
		r := e.must(400, e.do("GET", "/api/devices/security/bitlocker/keys?keyId="+samples[0].KeyID[:7], e.admin, nil))
		if !strings.Contains(r.errorMessage(t), "keyId") {
			t.Fatalf("message %q does not name keyId", r.errorMessage(t))
		}
	})

	t.Run("filters", func(t *testing.T) {
		var list struct{ Items []keyItem }
		e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys?limit=1000&deviceId="+devices[1].ID+"&status=active&volumeType=operatingSystem", e.admin, nil)).json(t, &list)
		if len(list.Items) != len(samples)/2 {
			t.Fatalf("%d keys for device 2, want %d", len(list.Items), len(samples)/2)
		}
		for _, k := range list.Items {
			if k.DeviceID != devices[1].ID || k.DeviceName != "LT-0002" {
				t.Fatalf("filter leaked key %+v", k)
			}
		}
		e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys?status=superseded", e.admin, nil)).json(t, &list)
		if len(list.Items) != 0 {
			t.Fatalf("%d superseded keys, want 0", len(list.Items))
		}
	})

	t.Run("cursor visits every key once", func(t *testing.T) {
		seen := map[string]int{}
		cursor, pages := "", 0
		for {
			var page struct {
				Items      []keyItem
				NextCursor *string
			}
			path := "/api/devices/security/bitlocker/keys?limit=3"
			if cursor != "" {
				path += "&cursor=" + url.QueryEscape(cursor)
			}
			e.must(200, e.do("GET", path, e.admin, nil)).json(t, &page)
			pages++
			for _, k := range page.Items {
				seen[k.KeyID]++
			}
			if page.NextCursor == nil {
				break
			}
			cursor = *page.NextCursor
			if pages > 100 {
				t.Fatal("pagination does not end")
			}
		}
		if len(seen) != len(samples) {
			t.Fatalf("visited %d keys, want %d", len(seen), len(samples))
		}
		for id, n := range seen {
			if n != 1 {
				t.Errorf("key %s visited %d times", id, n)
			}
		}
		if want := (len(samples) + 2) / 3; pages != want {
			t.Errorf("%d pages, want %d", pages, want)
		}
	})

	t.Run("user sees own devices only", func(t *testing.T) {
		alice := e.person(escrow.RoleUser, "Alice@Example.com")
		var list struct{ Items []keyItem }
		e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys?limit=1000", alice, nil)).json(t, &list)
		if len(list.Items) != (len(samples)+1)/2 {
			t.Fatalf("alice sees %d keys, want %d", len(list.Items), (len(samples)+1)/2)
		}
		for _, k := range list.Items {
			if k.DeviceID != devices[0].ID {
				t.Fatalf("alice sees a key of another device: %+v", k)
			}
		}
	})

	t.Run("each listing is audited", func(t *testing.T) {
		before := len(e.auditEvents("action=key.list"))
		e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys", e.admin, nil))
		if after := len(e.auditEvents("action=key.list")); after != before+1 {
			t.Fatalf("key.list events went from %d to %d", before, after)
		}
	})
}

func TestViewKey(t *testing.T) {
	e := newEnv(t)
	s := bitlockertest.Samples(t)[0]
	alice := e.enroll("LT-ALICE", "alice@example.com")
	bob := e.enroll("LT-BOB", "bob@example.com")
	e.must(201, e.do("PUT", "/api/agent/keys/"+s.KeyID, alice.Token, escrowBody("C", s.Password)))
	path := "/api/devices/security/bitlocker/keys/" + alice.ID

	t.Run("reason required", func(t *testing.T) {
		r := e.must(400, e.do("GET", path, e.admin, nil))
		if !strings.Contains(r.errorMessage(t), "reason") {
			t.Fatalf("message %q does not name reason", r.errorMessage(t))
		}
		if strings.Contains(string(r.body), s.Password) {
			t.Fatal("material in a refused answer")
		}
	})

	t.Run("admin sees the escrowed password and the read is audited", func(t *testing.T) {
		var v struct {
			DeviceID, DeviceName, EscrowStatus string
			Keys                               []keyItem
		}
		e.must(200, e.do("GET", path+"?reason="+url.QueryEscape("Forgotten PIN"), e.admin, nil)).json(t, &v)
		if v.DeviceID != alice.ID || v.DeviceName != "LT-ALICE" || len(v.Keys) != 1 || v.Keys[0].RecoveryPassword != s.Password {
			t.Fatalf("view answered %+v", v)
		}
		if v.Keys[0].AccessCount != 1 {
			t.Errorf("accessCount %d, want 1", v.Keys[0].AccessCount)
		}
		reads := e.auditEvents("action=key.read&deviceId=" + alice.ID)
		if len(reads) != 1 {
			t.Fatalf("%d key.read events, want 1", len(reads))
		}
		ev := reads[0]
		if ev.Actor.Type != "token" || ev.Actor.Name != "admin@example.com" || ev.KeyID != s.KeyID || ev.Source != "api" ||
			ev.Reason != "Forgotten PIN" || ev.Outcome != "success" || ev.IP == "" || ev.UserAgent != "keyward-test/1" {
			t.Fatalf("key.read event %+v", ev)
		}
	})

	t.Run("auditor is refused and the attempt audited", func(t *testing.T) {
		auditor := e.person(escrow.RoleAuditor, "audrey@example.com")
		r := e.must(403, e.do("GET", path+"?reason=curious", auditor, nil))
		if strings.Contains(string(r.body), s.Password) {
			t.Fatal("material in a refused answer")
		}
		var denied int
		for _, ev := range e.auditEvents("action=key.read&outcome=denied") {
			if ev.Actor.Name == "audrey@example.com" && ev.DeviceID == alice.ID && ev.Reason == "curious" {
				denied++
			}
		}
		if denied != 1 {
			t.Fatalf("%d denied key.read events for the auditor, want 1", denied)
		}
	})

	t.Run("user only for own device", func(t *testing.T) {
		u := e.person(escrow.RoleUser, "bob@example.com")
		e.must(403, e.do("GET", path+"?reason=mine", u, nil))
		e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys/"+bob.ID+"?reason=mine", u, nil))
	})

	t.Run("helpdesk scoped by tags sees nothing untagged", func(t *testing.T) {
		h := e.person(escrow.RoleHelpdesk, "hd@example.com", "branch-east")
		e.must(403, e.do("GET", path+"?reason=call", h, nil))
	})

	t.Run("unknown device", func(t *testing.T) {
		e.must(404, e.do("GET", "/api/devices/security/bitlocker/keys/6f1d0f0e-0000-4000-8000-000000000000?reason=x", e.admin, nil))
		e.must(404, e.do("GET", "/api/devices/security/bitlocker/keys/not-a-device?reason=x", e.admin, nil))
	})
}

func TestViewFailsClosedWhenAuditWriteFails(t *testing.T) {
	e := newEnv(t)
	s := bitlockertest.Samples(t)[0]
	d := e.enroll("LT-0042", "alice@example.com")
	e.must(201, e.do("PUT", "/api/agent/keys/"+s.KeyID, d.Token, escrowBody("C", s.Password)))

	// A real storage failure of exactly the audit write: the database refuses key.read events.
	raw := openRaw(t, e.dir)
	if _, err := raw.Exec(`CREATE TRIGGER fail_read BEFORE INSERT ON audit_events WHEN NEW.action = 'key.read'
		BEGIN SELECT RAISE(ABORT, 'audit disk full'); END`); err != nil {
		t.Fatal(err)
	}
	r := e.must(503, e.do("GET", "/api/devices/security/bitlocker/keys/"+d.ID+"?reason=test", e.admin, nil))
	if strings.Contains(string(r.body), s.Password) || strings.Contains(string(r.body), strings.ReplaceAll(s.Password, "-", "")) {
		t.Fatalf("material left the server although its audit event failed: %s", r.body)
	}
	var count int64
	if err := raw.QueryRow(`SELECT access_count FROM recovery_keys`).Scan(&count); err != nil {
		t.Fatal(err)
	}
	if count != 0 {
		t.Fatalf("access_count %d after a failed disclosure, want 0", count)
	}
	if _, err := raw.Exec(`DROP TRIGGER fail_read`); err != nil {
		t.Fatal(err)
	}
	var v struct{ Keys []keyItem }
	e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys/"+d.ID+"?reason=test", e.admin, nil)).json(t, &v)
	if len(v.Keys) != 1 || v.Keys[0].RecoveryPassword != s.Password {
		t.Fatalf("after the fault cleared the view answered %+v", v)
	}
}
