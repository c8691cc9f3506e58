package escrow_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// The devices of the role tests: alice's laptop carries the finance and emea tags.
var (
	alicesLaptop = escrow.Device{ID: "6b1f0a52-8f7e-4a57-9a0e-4f1c3f7f2d10", Name: "LT-0042",
		OwnerUPN: "Alice@Example.COM", Tags: []string{"finance", "emea"}}
	untaggedUnowned = escrow.Device{ID: "0f6a4c1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b", Name: "KIOSK-7"}
)

func person(role escrow.Role, email string, tags ...string) escrow.Principal {
	return escrow.Principal{Actor: escrow.Actor{Type: escrow.ActorUser, ID: "u-" + email, Name: email},
		Role: role, Email: email, ScopeTags: tags}
}

// TestPrincipalPermissions is the SPEC §5 matrix: each row is a principal and a device, and
// what the principal may do with it.
func TestPrincipalPermissions(t *testing.T) {
	devicePrincipal := escrow.Principal{Actor: escrow.Actor{Type: escrow.ActorDevice, ID: alicesLaptop.ID, Name: alicesLaptop.Name},
		DeviceID: alicesLaptop.ID}
	tests := []struct {
		name   string
		p      escrow.Principal
		d      escrow.Device
		scope  bool // p.Scope().Allows(d)
		list   bool
		viewOn bool // CanViewMaterial with self-service on
		viewOf bool // CanViewMaterial with self-service off
		rotate bool
		audit  bool
		report bool
		admin  bool
	}{
		{name: "admin: everything",
			p: person(escrow.RoleAdmin, "root@example.com"), d: alicesLaptop,
			scope: true, list: true, viewOn: true, viewOf: true, rotate: true, audit: true, report: true, admin: true},
		{name: "admin: device with no owner and no tags",
			p: person(escrow.RoleAdmin, "root@example.com"), d: untaggedUnowned,
			scope: true, list: true, viewOn: true, viewOf: true, rotate: true, audit: true, report: true, admin: true},
		{name: "admin with scope tags is still unscoped",
			p: person(escrow.RoleAdmin, "root@example.com", "hr"), d: alicesLaptop,
			scope: true, list: true, viewOn: true, viewOf: true, rotate: true, audit: true, report: true, admin: true},
		{name: "helpdesk without tags: every device, reports but not the audit log",
			p: person(escrow.RoleHelpdesk, "hd@example.com"), d: untaggedUnowned,
			scope: true, list: true, viewOn: true, viewOf: true, rotate: true, report: true},
		{name: "helpdesk with a matching tag",
			p: person(escrow.RoleHelpdesk, "hd@example.com", "emea"), d: alicesLaptop,
			scope: true, list: true, viewOn: true, viewOf: true, rotate: true, report: true},
		{name: "helpdesk with one of several tags matching",
			p: person(escrow.RoleHelpdesk, "hd@example.com", "hr", "finance"), d: alicesLaptop,
			scope: true, list: true, viewOn: true, viewOf: true, rotate: true, report: true},
		{name: "helpdesk with no matching tag: out of scope",
			p: person(escrow.RoleHelpdesk, "hd@example.com", "hr", "apac"), d: alicesLaptop,
			list: true, report: true},
		{name: "helpdesk tags are compared exactly, case-sensitively (current behaviour)",
			p: person(escrow.RoleHelpdesk, "hd@example.com", "Finance"), d: alicesLaptop,
			list: true, report: true},
		{name: "helpdesk with tags: untagged device is out of scope",
			p: person(escrow.RoleHelpdesk, "hd@example.com", "finance"), d: untaggedUnowned,
			list: true, report: true},
		{name: "auditor: lists everything, no material, no rotation",
			p: person(escrow.RoleAuditor, "audit@example.com"), d: alicesLaptop,
			scope: true, list: true, audit: true, report: true},
		{name: "user owns the device, upn compared case-insensitively",
			p: person(escrow.RoleUser, "alice@example.com"), d: alicesLaptop,
			scope: true, list: true, viewOn: true},
		{name: "user does not own the device",
			p: person(escrow.RoleUser, "bob@example.com"), d: alicesLaptop,
			list: true},
		{name: "user never matches a device without owner",
			p: person(escrow.RoleUser, "bob@example.com"), d: untaggedUnowned,
			list: true},
		{name: "user without a sign-in name matches no device, not even an unowned one",
			p: person(escrow.RoleUser, ""), d: untaggedUnowned,
			list: true},
		{name: "user with a blank sign-in name matches no device",
			p: person(escrow.RoleUser, "   "), d: untaggedUnowned,
			list: true},
		{name: "user with a tag-scoped principal still only owns by upn",
			p: person(escrow.RoleUser, "bob@example.com", "finance"), d: alicesLaptop,
			list: true},
		{name: "device principal can do none of them, even on itself",
			p: devicePrincipal, d: alicesLaptop},
		{name: "unknown role can do nothing",
			p: person("superuser", "eve@example.com"), d: alicesLaptop},
		{name: "role is case-sensitive",
			p: person("Admin", "eve@example.com"), d: alicesLaptop},
		{name: "zero principal can do nothing",
			p: escrow.Principal{}, d: untaggedUnowned},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checks := []struct {
				what      string
				got, want bool
			}{
				{"Scope().Allows", tt.p.Scope().Allows(tt.d), tt.scope},
				{"CanList", tt.p.CanList(), tt.list},
				{"CanViewMaterial(self-service on)", tt.p.CanViewMaterial(tt.d, true), tt.viewOn},
				{"CanViewMaterial(self-service off)", tt.p.CanViewMaterial(tt.d, false), tt.viewOf},
				{"CanRotate", tt.p.CanRotate(tt.d), tt.rotate},
				{"CanReadAudit", tt.p.CanReadAudit(), tt.audit},
				{"CanReadReports", tt.p.CanReadReports(), tt.report},
				// Metrics are for the same people as the audit log.
				{"CanReadMetrics", tt.p.CanReadMetrics(), tt.audit},
				{"CanAdminister", tt.p.CanAdminister(), tt.admin},
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
				}
			}
		})
	}
}

func TestPrincipalScope(t *testing.T) {
	tests := []struct {
		name string
		p    escrow.Principal
		want escrow.Scope
	}{
		{"admin sees all", person(escrow.RoleAdmin, "root@example.com"), escrow.Scope{All: true}},
		{"auditor sees all", person(escrow.RoleAuditor, "audit@example.com"), escrow.Scope{All: true}},
		{"helpdesk without tags sees all", person(escrow.RoleHelpdesk, "hd@example.com"), escrow.Scope{All: true}},
		{"helpdesk with tags sees those tags", person(escrow.RoleHelpdesk, "hd@example.com", "emea", "hr"),
			escrow.Scope{Tags: []string{"emea", "hr"}}},
		{"user sees own undisputed devices", person(escrow.RoleUser, "alice@example.com"), escrow.Scope{OwnerUPN: "alice@example.com", Undisputed: true}},
		{"user without email sees nothing", person(escrow.RoleUser, ""), escrow.Scope{}},
		{"user with blank email sees nothing", person(escrow.RoleUser, " \t"), escrow.Scope{}},
		{"device sees nothing", escrow.Principal{DeviceID: "d1"}, escrow.Scope{}},
		{"unknown role sees nothing", person("root", "eve@example.com"), escrow.Scope{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Scope(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Scope() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestScopeAllows(t *testing.T) {
	tests := []struct {
		name  string
		scope escrow.Scope
		d     escrow.Device
		want  bool
	}{
		{"zero scope allows nothing: owned, tagged device", escrow.Scope{}, alicesLaptop, false},
		{"zero scope allows nothing: unowned, untagged device", escrow.Scope{}, untaggedUnowned, false},
		{"zero scope allows nothing: zero device", escrow.Scope{}, escrow.Device{}, false},
		{"empty tag list allows nothing", escrow.Scope{Tags: []string{}}, alicesLaptop, false},
		{"all allows an unowned, untagged device", escrow.Scope{All: true}, untaggedUnowned, true},
		{"owner upn matches case-insensitively", escrow.Scope{OwnerUPN: "ALICE@example.com"}, alicesLaptop, true},
		{"owner upn must match whole", escrow.Scope{OwnerUPN: "alice@example.co"}, alicesLaptop, false},
		{"owner upn never matches an empty ownerUpn", escrow.Scope{OwnerUPN: "alice@example.com"}, untaggedUnowned, false},
		{"any one tag is enough", escrow.Scope{Tags: []string{"apac", "emea"}}, alicesLaptop, true},
		{"no shared tag", escrow.Scope{Tags: []string{"apac"}}, alicesLaptop, false},
		{"tags never match an untagged device", escrow.Scope{Tags: []string{"apac"}}, untaggedUnowned, false},
		{"undisputed leaves out a disputed device", escrow.Scope{OwnerUPN: "alice@example.com", Undisputed: true}, disputed(alicesLaptop), false},
		{"undisputed keeps an undisputed device", escrow.Scope{OwnerUPN: "alice@example.com", Undisputed: true}, alicesLaptop, true},
		{"all still allows a disputed device", escrow.Scope{All: true}, disputed(alicesLaptop), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.scope.Allows(tt.d); got != tt.want {
				t.Errorf("%+v.Allows(%+v) = %v, want %v", tt.scope, tt.d, got, tt.want)
			}
		})
	}
}

func TestRoleValid(t *testing.T) {
	tests := []struct {
		role escrow.Role
		want bool
	}{
		{escrow.RoleAdmin, true},
		{escrow.RoleHelpdesk, true},
		{escrow.RoleAuditor, true},
		{escrow.RoleUser, true},
		{"", false},
		{"Admin", false},
		{"device", false},
		{"admin ", false},
	}
	for _, tt := range tests {
		t.Run(string(tt.role), func(t *testing.T) {
			if got := tt.role.Valid(); got != tt.want {
				t.Errorf("Role(%q).Valid() = %v, want %v", tt.role, got, tt.want)
			}
		})
	}
}

// TestScopeOwnerMatch holds the owner scope to the one comparison of names: ASCII case is
// ignored, look-alikes that Unicode case folding would match are not, and "no owner" matches
// nobody.
func TestScopeOwnerMatch(t *testing.T) {
	tests := []struct {
		name         string
		email, owner string
		want         bool
	}{
		{"same", "alice@example.com", "alice@example.com", true},
		{"ASCII case differs", "Alice@Example.com", "aLICE@example.COM", true},
		{"different users", "alice@example.com", "bob@example.com", false},
		{"empty owner never matches", "alice@example.com", "", false},
		{"long s look-alike", "\u017fam@example.com", "sam@example.com", false},
		{"long s look-alike as the owner", "sam@example.com", "\u017fam@example.com", false},
		{"kelvin sign look-alike", "\u212aeith@example.com", "keith@example.com", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := escrow.Principal{Role: escrow.RoleUser, Email: tt.email}
			if got := p.Scope().Allows(escrow.Device{OwnerUPN: tt.owner}); got != tt.want {
				t.Errorf("user %q, device owner %q: Allows = %v, want %v", tt.email, tt.owner, got, tt.want)
			}
		})
	}
}

func disputed(d escrow.Device) escrow.Device {
	d.DisputedAt = time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	return d
}
