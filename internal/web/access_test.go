package web_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/escrow"
)

func TestRolesAndPages(t *testing.T) {
	s := seed(t)
	id := s.aliceLaptop.ID
	tests := []struct {
		who    string
		cookie string
		path   string
		want   int
	}{
		{"helpdesk", s.helpdesk, "/settings", http.StatusForbidden},
		{"helpdesk", s.helpdesk, "/users", http.StatusForbidden},
		{"helpdesk", s.helpdesk, "/tokens", http.StatusForbidden},
		{"helpdesk", s.helpdesk, "/audit", http.StatusForbidden},
		{"helpdesk", s.helpdesk, "/reports/escrow", http.StatusOK},
		{"helpdesk", s.helpdesk, "/devices/" + id + "/security", http.StatusOK},
		{"helpdesk", s.helpdesk, "/devices/" + id + "/rotate", http.StatusOK},
		{"auditor", s.auditor, "/audit", http.StatusOK},
		{"auditor", s.auditor, "/audit/export.csv", http.StatusOK},
		{"auditor", s.auditor, "/reports/escrow.csv", http.StatusOK},
		{"auditor", s.auditor, "/devices/" + id + "/rotate", http.StatusForbidden},
		{"auditor", s.auditor, "/settings", http.StatusForbidden},
		{"user", s.alice, "/devices", http.StatusForbidden},
		{"user", s.alice, "/devices/" + id, http.StatusForbidden},
		{"user", s.alice, "/audit", http.StatusForbidden},
		{"user", s.alice, "/reports/escrow", http.StatusForbidden},
		{"user", s.alice, "/my", http.StatusOK},
		{"admin", s.admin, "/devices/not-a-device", http.StatusNotFound},
		{"admin", s.admin, "/devices/6f1c2a4e-0000-4000-8000-000000000000", http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.who+" "+tt.path, func(t *testing.T) {
			r := s.get(tt.path, tt.cookie).must(t, tt.want)
			if tt.want == http.StatusForbidden && !strings.Contains(r.body, "Not allowed") {
				t.Fatalf("403 page: %s", shortBody(r.body))
			}
		})
	}
	if ev := s.events(escrow.AuditFilter{Actor: "helpdesk@example.com", Outcome: "denied"}); len(ev) < 4 || ev[0].Source != escrow.SourceAdminPortal {
		t.Fatalf("refused pages are audited as denied attempts: %+v", ev)
	}
}

func TestHelpdeskScope(t *testing.T) {
	e := newEnv(t)
	e.person(escrow.RoleHelpdesk, "lab-helpdesk@example.com", "lab")
	ks := samples(t, 1)
	d := e.enroll("LT-OFFICE", "alice@example.com", ks[0])
	c := e.session("lab-helpdesk@example.com")
	if r := e.get("/devices", c).must(t, http.StatusOK); strings.Contains(r.body, "LT-OFFICE") {
		t.Fatal("a helpdesk limited to tag lab lists an untagged device")
	}
	e.get("/devices/"+d.ID+"/security", c).must(t, http.StatusForbidden)
	r := e.post("/devices/"+d.ID+"/keys", c, url.Values{"reason": {"forgotten-pin"}}).must(t, http.StatusForbidden)
	if strings.Contains(r.body, ks[0].Password) {
		t.Fatal("key material in a refusal")
	}
}

func TestAuditorViewRefused(t *testing.T) {
	s := seed(t)
	r := s.post("/devices/"+s.aliceLaptop.ID+"/keys", s.auditor, url.Values{"reason": {"forgotten-pin"}}).must(t, http.StatusForbidden)
	if strings.Contains(r.body, s.aliceLaptop.Keys[0].Password) {
		t.Fatal("key material in the refusal")
	}
	// Also without a valid reason: the refusal comes from the store, and is recorded there.
	s.post("/devices/"+s.aliceLaptop.ID+"/keys", s.auditor, url.Values{}).must(t, http.StatusForbidden)
	ev := s.events(escrow.AuditFilter{Action: escrow.ActionKeyRead, Actor: "auditor@example.com"})
	if len(ev) != 2 || ev[0].Outcome != escrow.OutcomeDenied || ev[0].Source != escrow.SourceAdminPortal || ev[0].Reason != "Forgotten PIN" {
		t.Fatalf("auditor's attempts: %+v", ev)
	}
}

func TestViewKeyNeedsReason(t *testing.T) {
	s := seed(t)
	for name, form := range map[string]url.Values{
		"none":              {},
		"unknown":           {"reason": {"because"}},
		"other without why": {"reason": {"other"}},
		"control chars":     {"reason": {"other"}, "details": {"a\x00b"}},
	} {
		t.Run(name, func(t *testing.T) {
			r := s.post("/devices/"+s.aliceLaptop.ID+"/keys", s.admin, form).must(t, http.StatusBadRequest)
			if strings.Contains(r.body, s.aliceLaptop.Keys[0].Password) || strings.Contains(r.body, `class="key-panel"`) {
				t.Fatal("a key was shown without a reason")
			}
		})
	}
	if ev := s.events(escrow.AuditFilter{Action: escrow.ActionKeyRead}); len(ev) != 0 {
		t.Fatalf("key.read events without a disclosure: %+v", ev)
	}
	r := s.post("/devices/"+s.aliceLaptop.ID+"/keys", s.admin, url.Values{"reason": {"other"}, "details": {"drive imaged for the lab"}}).must(t, http.StatusOK)
	if !strings.Contains(r.body, strings.Split(s.aliceLaptop.Keys[0].Password, "-")[7]) || r.header.Get("Cache-Control") != "no-store" {
		t.Fatal("the key page does not show the key, or may be cached")
	}
	ev := s.events(escrow.AuditFilter{Action: escrow.ActionKeyRead})
	if len(ev) != 1 || ev[0].Reason != "drive imaged for the lab" || ev[0].Source != escrow.SourceAdminPortal {
		t.Fatalf("key.read: %+v", ev)
	}
}

func TestCrossOriginRefused(t *testing.T) {
	s := seed(t)
	form := url.Values{"reason": {"forgotten-pin"}}
	for name, hdr := range map[string]map[string]string{
		"Sec-Fetch-Site cross-site":         {"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"},
		"Sec-Fetch-Site same-site":          {"Sec-Fetch-Site": "same-site", "Origin": "http://sub.example"},
		"Origin of another host, old agent": {"Sec-Fetch-Site": "", "Origin": "http://evil.example"},
	} {
		t.Run(name, func(t *testing.T) {
			r := s.do(request{method: http.MethodPost, path: "/devices/" + s.aliceLaptop.ID + "/keys", cookie: s.admin, form: form, headers: hdr}).must(t, http.StatusForbidden)
			if strings.Contains(r.body, s.aliceLaptop.Keys[0].Password) || r.header.Get("Content-Security-Policy") == "" {
				t.Fatal("cross-site answer")
			}
			s.do(request{method: http.MethodPost, path: "/settings", cookie: s.admin, headers: hdr,
				form: url.Values{"retentionPeriod": {"1d"}, "escrowGracePeriod": {"1h"}, "rotationTimeout": {"1h"}, "maxKeyAge": {"0"}}}).must(t, http.StatusForbidden)
			s.do(request{method: http.MethodPost, path: "/signout", cookie: s.admin, headers: hdr}).must(t, http.StatusForbidden)
		})
	}
	if ev := s.events(escrow.AuditFilter{Action: escrow.ActionKeyRead}); len(ev) != 0 {
		t.Fatalf("a cross-site POST disclosed: %+v", ev)
	}
	set, err := s.db.Settings(t.Context())
	if err != nil || !set.SelfServiceEnabled {
		t.Fatalf("a cross-site POST changed the settings: %+v %v", set, err)
	}
	s.get("/devices", s.admin).must(t, http.StatusOK) // and the session survived the cross-site sign-out
}

func TestSelfService(t *testing.T) {
	s := seed(t)
	alice, bob := s.aliceLaptop.Keys[0], s.bobLaptop.Keys[0]

	t.Run("own key by key ID, and by device", func(t *testing.T) {
		r := s.post("/my/key", s.alice, url.Values{"keyId": {"{" + strings.ToLower(alice.KeyID[:13])}, "reason": {"pin-attempts"}}).must(t, http.StatusOK)
		for _, block := range strings.Split(alice.Password, "-") {
			if !strings.Contains(r.body, block) {
				t.Fatalf("the key page lacks block %s", block)
			}
		}
		r = s.post("/my/key", s.alice, url.Values{"deviceId": {s.aliceLaptop.ID}, "reason": {"hardware"}}).must(t, http.StatusOK)
		if !strings.Contains(r.body, `data-copy="`+alice.Password+`"`) {
			t.Fatal("no Copy button with the key")
		}
		ev := s.events(escrow.AuditFilter{Action: escrow.ActionKeyRead, Outcome: "success"})
		if len(ev) != 2 || ev[0].Source != escrow.SourceSelfService || ev[0].Reason != "Too many incorrect PIN attempts" {
			t.Fatalf("self-service key.read events: %+v", ev)
		}
	})

	t.Run("another person's key or device answers exactly like one that does not exist", func(t *testing.T) {
		answers := map[string]response{}
		for name, form := range map[string]url.Values{
			"other's key ID":       {"keyId": {bob.KeyID[:8]}, "reason": {"firmware"}},
			"unknown key ID":       {"keyId": {"0000AAAA"}, "reason": {"firmware"}},
			"other's whole key ID": {"keyId": {bob.KeyID}, "reason": {"firmware"}},
			"unknown whole key ID": {"keyId": {"0000AAAA-1111-4222-8333-444455556666"}, "reason": {"firmware"}},
			"other's device":       {"deviceId": {s.bobLaptop.ID}, "reason": {"firmware"}},
			"unknown device":       {"deviceId": {"6f1c2a4e-0000-4000-8000-000000000000"}, "reason": {"firmware"}},
		} {
			answers[name] = s.post("/my/key", s.alice, form).must(t, http.StatusNotFound)
		}
		var first string
		for name, r := range answers {
			if strings.Contains(r.body, bob.Password) || strings.Contains(r.body, "LT-BOB") {
				t.Fatalf("%s: the answer tells of bob's device", name)
			}
			if first == "" {
				first = r.body
			} else if r.body != first {
				t.Fatalf("%s answers differently:\n%s\n---\n%s", name, shortBody(r.body), shortBody(first))
			}
		}
		if !strings.Contains(first, "No recovery key with this key ID was found among your devices") {
			t.Fatalf("not-found page: %s", shortBody(first))
		}
		denied := s.events(escrow.AuditFilter{Action: escrow.ActionKeyRead, Outcome: "denied", Actor: "alice@example.com"})
		if len(denied) != 6 {
			t.Fatalf("each attempt is a denied key.read: %+v", denied)
		}
	})

	t.Run("turned off: the pages are not there", func(t *testing.T) {
		s.settings(map[string]string{"selfServiceEnabled": "false"})
		defer s.settings(map[string]string{"selfServiceEnabled": "true"})
		r := s.get("/my", s.alice).must(t, http.StatusNotFound)
		if !strings.Contains(r.body, "Self-service is turned off") {
			t.Fatalf("turned-off page: %s", shortBody(r.body))
		}
		r = s.post("/my/key", s.alice, url.Values{"keyId": {alice.KeyID[:8]}, "reason": {"firmware"}}).must(t, http.StatusNotFound)
		if strings.Contains(r.body, alice.Password) {
			t.Fatal("a key with self-service off")
		}
	})
}

func TestAdminActions(t *testing.T) {
	s := seed(t)

	t.Run("settings", func(t *testing.T) {
		form := url.Values{"selfServiceEnabled": {"true"}, "retentionPeriod": {"30d"}, "escrowGracePeriod": {"1h"}, "rotationTimeout": {"1h"}, "maxKeyAge": {"0"}}
		r := s.post("/settings", s.admin, form).must(t, http.StatusSeeOther)
		if r.header.Get("Location") != "/settings?notice=settings-saved" {
			t.Fatalf("Location %q", r.header.Get("Location"))
		}
		set, err := s.db.Settings(t.Context())
		if err != nil || set.AutoRotateOnDisclosure || set.RetentionPeriod.Hours() != 30*24 {
			t.Fatalf("settings after saving: %+v %v", set, err)
		}
		ev := s.events(escrow.AuditFilter{Action: escrow.ActionSettingsUpdate, Actor: "admin@example.com"})
		if len(ev) != 1 || ev[0].Detail != "autoRotateOnDisclosure true -> false; retentionPeriod 7d -> 30d" {
			t.Fatalf("settings events: %+v", ev)
		}
		form.Set("retentionPeriod", "forever")
		r = s.post("/settings", s.admin, form).must(t, http.StatusBadRequest)
		if !strings.Contains(r.body, "retentionPeriod") {
			t.Fatalf("invalid setting page: %s", shortBody(r.body))
		}
	})

	t.Run("users and roles", func(t *testing.T) {
		s.post("/users", s.admin, url.Values{"email": {"hd2@example.com"}, "role": {"helpdesk"}, "tags": {"lab, kiosk"}}).must(t, http.StatusSeeOther)
		s.post("/users", s.admin, url.Values{"email": {"hd2@example.com"}, "role": {"helpdesk"}}).must(t, http.StatusConflict)
		s.post("/users", s.admin, url.Values{"email": {"short@example.com"}, "role": {"user"}, "password": {"short"}}).must(t, http.StatusBadRequest)
		u, _, err := s.db.UserCredentials(t.Context(), "hd2@example.com")
		if err != nil || u.Role != escrow.RoleHelpdesk || strings.Join(u.ScopeTags, ",") != "lab,kiosk" {
			t.Fatalf("created user: %+v %v", u, err)
		}
		s.post("/users/"+u.ID+"/role", s.admin, url.Values{"role": {"auditor"}}).must(t, http.StatusSeeOther)
		if u, _, _ = s.db.UserCredentials(t.Context(), "hd2@example.com"); u.Role != escrow.RoleAuditor || len(u.ScopeTags) != 0 {
			t.Fatalf("after the role change: %+v", u)
		}
		admin := s.users["admin@example.com"]
		r := s.post("/users/"+admin.ID+"/role", s.admin, url.Values{"role": {"user"}}).must(t, http.StatusConflict)
		if !strings.Contains(r.body, "last admin") {
			t.Fatalf("demoting the last admin: %s", shortBody(r.body))
		}
		if r := s.get("/users", s.admin).must(t, http.StatusOK); !strings.Contains(r.body, "hd2@example.com") {
			t.Fatal("the users page does not list the new user")
		}
	})

	t.Run("tokens are shown once", func(t *testing.T) {
		r := s.post("/tokens/api", s.admin, url.Values{"email": {"auditor@example.com"}, "name": {"siem"}}).must(t, http.StatusCreated)
		if !strings.Contains(r.body, "kwt_") {
			t.Fatal("no API token shown")
		}
		r = s.post("/tokens/enrollment", s.admin, url.Values{"uses": {"5"}, "expires": {"7d"}}).must(t, http.StatusCreated)
		if !strings.Contains(r.body, "kwe_") || !strings.Contains(r.body, "5 uses, valid for 7d") {
			t.Fatalf("enrollment token page: %s", shortBody(r.body))
		}
		s.post("/tokens/enrollment", s.admin, url.Values{"uses": {"-1"}}).must(t, http.StatusBadRequest)
		s.post("/tokens/api", s.admin, url.Values{"email": {"nobody@example.com"}}).must(t, http.StatusBadRequest)
	})

	t.Run("rotate with confirmation", func(t *testing.T) {
		s.post("/devices/"+s.bobLaptop.ID+"/rotate", s.helpdesk, url.Values{"reason": {""}}).must(t, http.StatusBadRequest)
		r := s.post("/devices/"+s.bobLaptop.ID+"/rotate", s.helpdesk, url.Values{"reason": {"key read out over the phone"}}).must(t, http.StatusSeeOther)
		if !strings.HasSuffix(r.header.Get("Location"), "/security?notice=rotation-requested") {
			t.Fatalf("Location %q", r.header.Get("Location"))
		}
		page := s.get(r.header.Get("Location"), s.helpdesk).must(t, http.StatusOK)
		if !strings.Contains(page.body, "Rotation requested") || !strings.Contains(page.body, "key read out over the phone") {
			t.Fatalf("security page after the rotation: %s", shortBody(page.body))
		}
		s.post("/devices/"+s.bobLaptop.ID+"/rotate", s.auditor, url.Values{"reason": {"x"}}).must(t, http.StatusForbidden)
	})

	t.Run("exports", func(t *testing.T) {
		r := s.get("/audit/export.csv?action=user.create", s.admin).must(t, http.StatusOK)
		if !strings.HasPrefix(r.header.Get("Content-Type"), "text/csv") || !strings.Contains(r.body, "hd2@example.com") || strings.Contains(r.body, "settings.update") {
			t.Fatalf("audit CSV: %v\n%s", r.header, shortBody(r.body))
		}
		s.get("/audit/export.csv?keyId=nope", s.admin).must(t, http.StatusBadRequest)
		r = s.get("/reports/escrow.csv", s.admin).must(t, http.StatusOK)
		if !strings.HasPrefix(r.body, "deviceId,deviceName,ownerUpn,escrowStatus,problem,why,since,lastSeenAt") {
			t.Fatalf("report CSV: %s", r.body)
		}
	})
}

func TestDeviceSearch(t *testing.T) {
	s := seed(t)
	for q, want := range map[string][]string{
		"lt-al":                       {"LT-ALICE"},
		"ALICE@EXAMPLE":               {"LT-ALICE"},
		"EXAMPLE.COM":                 nil, // the start of a name, not any part: each is a range of an index
		"bob@":                        {"LT-BOB"},
		s.bobLaptop.Keys[0].KeyID[:8]: {"LT-BOB"},
		strings.ToLower(s.bobLaptop.Keys[0].KeyID): {"LT-BOB"},
		"%": nil,
		"_": nil,
	} {
		t.Run(q, func(t *testing.T) {
			r := s.get("/devices?q="+url.QueryEscape(q), s.admin).must(t, http.StatusOK)
			for _, name := range []string{"LT-ALICE", "LT-BOB"} {
				if got, wanted := strings.Contains(r.body, ">"+name+"<"), contains(want, name); got != wanted {
					t.Errorf("search %q: %s listed %v, want %v", q, name, got, wanted)
				}
			}
		})
	}
	if ev := s.events(escrow.AuditFilter{Action: escrow.ActionKeyList, Source: string(escrow.SourceAdminPortal)}); len(ev) < 2 {
		t.Fatalf("searches by key ID are key listings and audited: %+v", ev)
	}
	r := s.get("/devices?status=failed", s.admin).must(t, http.StatusOK)
	if strings.Contains(r.body, ">LT-ALICE<") {
		t.Fatal("the status filter lets an escrowed device through")
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
