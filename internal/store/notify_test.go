package store_test

import (
	"slices"
	"testing"

	"github.com/keyward/keyward/internal/escrow"
)

func TestNotifyLookups(t *testing.T) {
	e := newEnv(t)
	people := []struct {
		email   string
		role    escrow.Role
		disable bool
	}{
		{"zed-admin@example.com", escrow.RoleAdmin, false},
		{"Ann-Helpdesk@example.com", escrow.RoleHelpdesk, false},
		{"gone-helpdesk@example.com", escrow.RoleHelpdesk, true},
		{"audit@example.com", escrow.RoleAuditor, false},
		{"user@example.com", escrow.RoleUser, false},
	}
	for _, p := range people {
		u, err := e.db.CreateUser(e.ctx, adminOrigin, escrow.NewUser{Email: p.email, Role: p.role})
		if err != nil {
			t.Fatal(err)
		}
		if p.disable {
			yes := true
			if _, err := e.db.UpdateUser(e.ctx, adminOrigin, u.ID, escrow.UserChange{Disabled: &yes}); err != nil {
				t.Fatal(err)
			}
		}
	}

	approvers, err := e.db.Approvers(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, u := range approvers {
		names = append(names, u.Email+" "+string(u.Role))
	}
	if want := []string{"ann-helpdesk@example.com helpdesk", "zed-admin@example.com admin"}; !slices.Equal(names, want) {
		t.Errorf("approvers %q, want %q (enabled admins and helpdesk, in name order)", names, want)
	}

	u, err := e.db.UserByName(e.ctx, "ANN-helpdesk@Example.com")
	if err != nil || u.Email != "ann-helpdesk@example.com" || u.Role != escrow.RoleHelpdesk {
		t.Errorf("UserByName = %+v, %v", u, err)
	}
	if u, err := e.db.UserByName(e.ctx, "gone-helpdesk@example.com"); err != nil || u.DisabledAt.IsZero() {
		t.Errorf("a disabled person is found, marked disabled: %+v, %v", u, err)
	}
	for _, name := range []string{"nobody@example.com", "", "bad name"} {
		if _, err := e.db.UserByName(e.ctx, name); escrow.ErrorCode(err) != escrow.CodeNotFound {
			t.Errorf("UserByName(%q): %v, want not found", name, err)
		}
	}

	en := e.enroll("LT-NOTIFY", "owner@example.com")
	tags := []string{"paris"}
	if _, err := e.db.UpdateDevice(e.ctx, adminOrigin, en.DeviceID, escrow.DeviceChange{Tags: &tags}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.RetireDevice(e.ctx, adminOrigin, en.DeviceID, "sold"); err != nil {
		t.Fatal(err)
	}
	d, err := e.db.DeviceRecord(e.ctx, en.DeviceID)
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "LT-NOTIFY" || d.OwnerUPN != "owner@example.com" || !slices.Equal(d.Tags, tags) || d.RetiredAt.IsZero() {
		t.Errorf("DeviceRecord = %+v, want the retired device with its owner and tags", d)
	}
	if _, err := e.db.DeviceRecord(e.ctx, "6f1c2a4e-0000-4000-8000-000000000000"); escrow.ErrorCode(err) != escrow.CodeNotFound {
		t.Errorf("unknown device: %v, want not found", err)
	}
}
