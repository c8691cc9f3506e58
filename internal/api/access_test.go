package api_test

import (
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/keyward/keyward/internal/escrow"
)

type tokenItem struct {
	ID, UserEmail, Name, Token string
	RevokedAt, LastUsedAt      *string
}

type userItem struct {
	ID, Email, Role string
	ScopeTags       []string
	Disabled        bool
	DisabledAt      *string
}

func tokenID(tok string) string { return tok[4:20] }

func tokensByID(items []tokenItem) map[string]tokenItem {
	out := map[string]tokenItem{}
	for _, t := range items {
		out[t.ID] = t
	}
	return out
}

// wantOneEvent checks that the audit trail holds exactly one event of the action with the
// outcome made through the API, and returns it.
func (e *env) wantOneEvent(action, outcome string) auditRecord {
	e.t.Helper()
	ev := e.auditEvents("source=api&action=" + action + "&outcome=" + outcome)
	if len(ev) != 1 {
		e.t.Fatalf("%s %s events: %+v, want one", action, outcome, ev)
	}
	return ev[0]
}

func TestAPITokens(t *testing.T) {
	e := newEnv(t)
	helpdesk := e.person(escrow.RoleHelpdesk, "hd@example.com")
	user := e.person(escrow.RoleUser, "user@example.com")

	var created tokenItem
	e.must(201, e.do("POST", "/api/tokens", e.admin, map[string]any{"name": "backup script", "userEmail": "hd@example.com"})).json(t, &created)
	if !strings.HasPrefix(created.Token, "kwt_") || created.ID != tokenID(created.Token) || created.UserEmail != "hd@example.com" {
		t.Fatalf("created %+v", created)
	}
	e.must(200, e.do("GET", "/api/devices", created.Token, nil))

	t.Run("only admins create tokens", func(t *testing.T) {
		e.must(403, e.do("POST", "/api/tokens", helpdesk, map[string]any{"name": "mine"}))
		r := e.must(400, e.do("POST", "/api/tokens", e.admin, map[string]any{"name": "x", "secret": "y"}))
		if m := r.errorMessage(t); m != "secret: unknown field" {
			t.Fatalf("message %q", m)
		}
		r = e.must(400, e.do("POST", "/api/tokens", e.admin, map[string]any{"userEmail": "nobody@example.com"}))
		if m := r.errorMessage(t); !strings.HasPrefix(m, "userEmail:") {
			t.Fatalf("message %q", m)
		}
	})

	t.Run("a person lists only their own tokens, never a secret", func(t *testing.T) {
		var list struct{ Items []tokenItem }
		r := e.must(200, e.do("GET", "/api/tokens", helpdesk, nil))
		r.json(t, &list)
		byID := tokensByID(list.Items)
		if len(list.Items) != 2 || byID[tokenID(helpdesk)].ID == "" || byID[created.ID].Name != "backup script" {
			t.Fatalf("helpdesk's list %+v", list.Items)
		}
		if strings.Contains(string(r.body), created.Token[21:]) || strings.Contains(string(r.body), "\"token\"") {
			t.Fatalf("the list holds a secret: %s", r.body)
		}
		e.must(200, e.do("GET", "/api/tokens?user=hd@example.com", user, nil)).json(t, &list)
		if len(list.Items) != 0 {
			t.Fatalf("another person's tokens: %+v", list.Items)
		}
		e.must(200, e.do("GET", "/api/tokens", e.admin, nil)).json(t, &list)
		if len(list.Items) != 4 {
			t.Fatalf("admin's list %+v", list.Items)
		}
		e.must(200, e.do("GET", "/api/tokens?user=HD@example.com", e.admin, nil)).json(t, &list)
		if len(list.Items) != 2 {
			t.Fatalf("admin's list of one person %+v", list.Items)
		}
		e.must(400, e.do("GET", "/api/tokens?owner=x", e.admin, nil))
	})

	t.Run("another person's token answers like an unknown one", func(t *testing.T) {
		a := e.must(404, e.do("DELETE", "/api/tokens/"+created.ID, user, nil))
		b := e.must(404, e.do("DELETE", "/api/tokens/0123456789abcdef", user, nil))
		if a.errorMessage(t) != b.errorMessage(t) {
			t.Fatalf("answers differ: %s / %s", a.body, b.body)
		}
		e.must(404, e.do("DELETE", "/api/tokens/not-a-token-id", e.admin, nil))
		e.must(200, e.do("GET", "/api/devices", created.Token, nil))
		ev := e.wantOneEvent(escrow.ActionTokenRevoke, "denied")
		if ev.Actor.ID != tokenID(user) {
			t.Fatalf("denied event %+v", ev)
		}
	})

	t.Run("a revoked token is refused at once", func(t *testing.T) {
		e.must(204, e.do("DELETE", "/api/tokens/"+created.ID, helpdesk, nil))
		e.must(401, e.do("GET", "/api/devices", created.Token, nil))
		ev := e.wantOneEvent(escrow.ActionTokenRevoke, "success")
		if ev.Actor.Type != "token" || ev.Actor.ID != tokenID(helpdesk) || ev.Actor.Name != "hd@example.com" || ev.Source != "api" {
			t.Fatalf("revocation event %+v", ev)
		}
		r := e.must(409, e.do("DELETE", "/api/tokens/"+created.ID, e.admin, nil))
		if r.errorCode(t) != string(escrow.CodeConflict) {
			t.Fatalf("second revocation: %s", r.body)
		}
		var list struct{ Items []tokenItem }
		e.must(200, e.do("GET", "/api/tokens", helpdesk, nil)).json(t, &list)
		byID := tokensByID(list.Items)
		if byID[created.ID].RevokedAt == nil || byID[tokenID(helpdesk)].RevokedAt != nil || byID[tokenID(helpdesk)].LastUsedAt == nil {
			t.Fatalf("after revocation %+v", list.Items)
		}
	})
}

func TestAPIUsers(t *testing.T) {
	e := newEnv(t)
	helpdesk := e.person(escrow.RoleHelpdesk, "hd@example.com")

	var u userItem
	e.must(201, e.do("POST", "/api/users", e.admin, map[string]any{"email": "leaver@example.com", "role": "helpdesk", "scopeTags": []string{"lab"}})).json(t, &u)
	if u.Email != "leaver@example.com" || u.Role != "helpdesk" || u.Disabled || len(u.ScopeTags) != 1 {
		t.Fatalf("created %+v", u)
	}
	e.wantOneEvent(escrow.ActionUserCreate, "success")

	for name, c := range map[string]struct {
		body  any
		field string
	}{
		"password":  {map[string]any{"email": "a@example.com", "role": "user", "password": "hunter2"}, "password:"},
		"bad role":  {map[string]any{"email": "a@example.com", "role": "root"}, "role:"},
		"bad email": {map[string]any{"email": "not-an-email", "role": "user"}, "email:"},
		"bad tags":  {map[string]any{"email": "a@example.com", "role": "helpdesk", "scopeTags": []string{""}}, "scopeTags:"},
	} {
		r := e.must(400, e.do("POST", "/api/users", e.admin, c.body))
		if m := r.errorMessage(t); !strings.HasPrefix(m, c.field) {
			t.Errorf("%s: message %q", name, m)
		}
	}
	e.must(409, e.do("POST", "/api/users", e.admin, map[string]any{"email": "LEAVER@example.com", "role": "user"}))
	e.must(403, e.do("POST", "/api/users", helpdesk, map[string]any{"email": "b@example.com", "role": "admin"}))
	e.must(403, e.do("GET", "/api/users", helpdesk, nil))
	e.must(403, e.do("PATCH", "/api/users/"+u.ID, helpdesk, map[string]any{"disabled": true}))

	var list struct{ Items []userItem }
	e.must(200, e.do("GET", "/api/users", e.admin, nil)).json(t, &list)
	if len(list.Items) != 3 || list.Items[2].Email != "leaver@example.com" {
		t.Fatalf("users %+v", list.Items)
	}

	t.Run("disabling refuses the person's tokens until they are enabled", func(t *testing.T) {
		var tok tokenItem
		e.must(201, e.do("POST", "/api/tokens", e.admin, map[string]any{"userEmail": "leaver@example.com"})).json(t, &tok)
		e.must(200, e.do("GET", "/api/devices", tok.Token, nil))

		var got userItem
		e.must(200, e.do("PATCH", "/api/users/"+u.ID, e.admin, map[string]any{"disabled": true})).json(t, &got)
		if !got.Disabled || got.DisabledAt == nil || got.Role != "helpdesk" {
			t.Fatalf("disabled %+v", got)
		}
		e.must(401, e.do("GET", "/api/devices", tok.Token, nil))
		ev := e.wantOneEvent(escrow.ActionUserDisable, "success")
		if ev.Actor.ID != tokenID(e.admin) || ev.Actor.Name != "admin@example.com" {
			t.Fatalf("disable event %+v", ev)
		}

		e.must(200, e.do("PATCH", "/api/users/"+u.ID, e.admin, map[string]any{"disabled": false})).json(t, &got)
		if got.Disabled || got.DisabledAt != nil {
			t.Fatalf("enabled %+v", got)
		}
		e.must(200, e.do("GET", "/api/devices", tok.Token, nil))
		e.wantOneEvent(escrow.ActionUserEnable, "success")
	})

	t.Run("role and tags", func(t *testing.T) {
		var got userItem
		e.must(200, e.do("PATCH", "/api/users/"+u.ID, e.admin, map[string]any{"role": "auditor", "scopeTags": []string{}})).json(t, &got)
		if got.Role != "auditor" || len(got.ScopeTags) != 0 {
			t.Fatalf("changed %+v", got)
		}
		e.wantOneEvent(escrow.ActionUserRole, "success")
	})

	t.Run("bad changes", func(t *testing.T) {
		for name, c := range map[string]struct {
			path   string
			body   any
			status int
			field  string
		}{
			"empty":         {"/api/users/" + u.ID, map[string]any{}, 400, "body:"},
			"unknown field": {"/api/users/" + u.ID, map[string]any{"email": "x@example.com"}, 400, "email:"},
			"bad role":      {"/api/users/" + u.ID, map[string]any{"role": "root"}, 400, "role:"},
			"not a bool":    {"/api/users/" + u.ID, map[string]any{"disabled": "yes"}, 400, "disabled:"},
			"unknown user":  {"/api/users/" + uuid.NewString(), map[string]any{"disabled": true}, 404, "user:"},
			"not an ID":     {"/api/users/admin@example.com", map[string]any{"disabled": true}, 404, "user:"},
		} {
			r := e.must(c.status, e.do("PATCH", c.path, e.admin, c.body))
			if m := r.errorMessage(t); !strings.HasPrefix(m, c.field) {
				t.Errorf("%s: message %q", name, m)
			}
		}
	})

	t.Run("the last admin cannot be disabled or demoted, nor an admin by themself", func(t *testing.T) {
		e.must(200, e.do("GET", "/api/users", e.admin, nil)).json(t, &list)
		adminID := list.Items[0].ID
		e.must(409, e.do("PATCH", "/api/users/"+adminID, e.admin, map[string]any{"disabled": true}))
		e.must(409, e.do("PATCH", "/api/users/"+adminID, e.admin, map[string]any{"role": "user"}))
		e.must(200, e.do("PATCH", "/api/users/"+u.ID, e.admin, map[string]any{"role": "admin"}))
		r := e.must(409, e.do("PATCH", "/api/users/"+adminID, e.admin, map[string]any{"disabled": true}))
		if m := r.errorMessage(t); !strings.Contains(m, "yourself") {
			t.Fatalf("message %q", m)
		}
		e.must(200, e.do("GET", "/api/users", e.admin, nil))
		if n := len(e.auditEvents("action=" + escrow.ActionUserDisable)); n != 1 {
			t.Fatalf("%d disable events", n)
		}
	})
}

func TestAPIEnrollmentTokens(t *testing.T) {
	e := newEnv(t)
	helpdesk := e.person(escrow.RoleHelpdesk, "hd@example.com")
	var tok struct{ ID, Token string }
	e.must(201, e.do("POST", "/api/enrollment-tokens", e.admin, map[string]any{"uses": 3, "expires": "7d"})).json(t, &tok)

	type enrollItem struct {
		ID, CreatedBy        string
		UsesLeft             *int64
		ExpiresAt, RevokedAt *string
	}
	var list struct{ Items []enrollItem }
	r := e.must(200, e.do("GET", "/api/enrollment-tokens", e.admin, nil))
	r.json(t, &list)
	if len(list.Items) != 1 || list.Items[0].ID != tok.ID || *list.Items[0].UsesLeft != 3 || list.Items[0].ExpiresAt == nil ||
		list.Items[0].RevokedAt != nil || list.Items[0].CreatedBy != "admin@example.com" {
		t.Fatalf("list %+v", list.Items)
	}
	if strings.Contains(string(r.body), tok.Token[21:]) {
		t.Fatalf("the list holds the secret: %s", r.body)
	}
	e.must(403, e.do("GET", "/api/enrollment-tokens", helpdesk, nil))
	e.must(403, e.do("DELETE", "/api/enrollment-tokens/"+tok.ID, helpdesk, nil))
	e.must(404, e.do("DELETE", "/api/enrollment-tokens/0123456789abcdef", e.admin, nil))
	e.must(404, e.do("DELETE", "/api/enrollment-tokens/..%2F", e.admin, nil))

	e.must(204, e.do("DELETE", "/api/enrollment-tokens/"+tok.ID, e.admin, nil))
	ev := e.wantOneEvent(escrow.ActionEnrollTokenRevoke, "success")
	if ev.Actor.ID != tokenID(e.admin) {
		t.Fatalf("revocation event %+v", ev)
	}
	e.must(409, e.do("DELETE", "/api/enrollment-tokens/"+tok.ID, e.admin, nil))
	e.must(401, e.do("POST", "/api/agent/enroll", "", map[string]any{
		"enrollmentToken": tok.Token, "hostname": "LT-0001", "serialNumber": "SN-1", "osVersion": "10.0.22631",
	}))
	var devices struct{ Items []any }
	e.must(200, e.do("GET", "/api/devices", e.admin, nil)).json(t, &devices)
	if len(devices.Items) != 0 {
		t.Fatalf("devices after a revoked enrollment %+v", devices.Items)
	}
	e.must(200, e.do("GET", "/api/enrollment-tokens", e.admin, nil)).json(t, &list)
	if list.Items[0].RevokedAt == nil {
		t.Fatalf("after revocation %+v", list.Items)
	}
}
