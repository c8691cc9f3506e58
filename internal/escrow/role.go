package escrow

import (
	"slices"
	"strings"
)

// Role is what a person may do (SPEC §5).
type Role string

// The roles.
const (
	RoleAdmin    Role = "admin"
	RoleHelpdesk Role = "helpdesk"
	RoleAuditor  Role = "auditor"
	RoleUser     Role = "user"
)

// Valid reports whether r is one of the roles.
func (r Role) Valid() bool {
	switch r {
	case RoleAdmin, RoleHelpdesk, RoleAuditor, RoleUser:
		return true
	}
	return false
}

// Principal is an authenticated caller: a person (signed in or through an API token) or a device.
type Principal struct {
	Actor Actor
	Role  Role   // empty for a device
	Email string // the person's sign-in name; a user role owns devices whose ownerUpn equals it
	// ScopeTags limits a helpdesk person to devices carrying at least one of these tags; empty
	// means every device.
	ScopeTags []string
	DeviceID  string // set only for a device
}

// Scope is the set of devices a principal may see. The zero Scope matches nothing.
type Scope struct {
	All      bool
	OwnerUPN string   // devices owned by this user
	Tags     []string // devices carrying any of these tags
	// Undisputed leaves out devices an admin marked disputed: self-service never offers them.
	Undisputed bool
}

// Allows reports whether the device is inside the scope.
func (s Scope) Allows(d Device) bool {
	if s.Undisputed && d.Disputed() {
		return false
	}
	switch {
	case s.All:
		return true
	case s.OwnerUPN != "":
		return SameName(s.OwnerUPN, d.OwnerUPN)
	case len(s.Tags) > 0:
		for _, t := range d.Tags {
			if slices.Contains(s.Tags, t) {
				return true
			}
		}
	}
	return false
}

// Scope returns the devices the principal may list and, with the right role, act on.
func (p Principal) Scope() Scope {
	switch p.Role {
	case RoleAdmin, RoleAuditor:
		return Scope{All: true}
	case RoleHelpdesk:
		if len(p.ScopeTags) == 0 {
			return Scope{All: true}
		}
		return Scope{Tags: p.ScopeTags}
	case RoleUser:
		if strings.TrimSpace(p.Email) == "" {
			return Scope{}
		}
		return Scope{OwnerUPN: p.Email, Undisputed: true}
	}
	return Scope{}
}

// CanList reports whether the principal may list devices and key metadata (within its scope).
func (p Principal) CanList() bool { return p.Role.Valid() }

// CanViewMaterial reports whether the principal may see the key material of the device.
// selfService is the setting that lets users see their own devices' keys.
func (p Principal) CanViewMaterial(d Device, selfService bool) bool {
	switch p.Role {
	case RoleAdmin, RoleHelpdesk:
		return p.Scope().Allows(d)
	case RoleUser:
		return selfService && p.Scope().Allows(d)
	}
	return false
}

// CanRotate reports whether the principal may request rotation of the device's keys.
func (p Principal) CanRotate(d Device) bool {
	return (p.Role == RoleAdmin || p.Role == RoleHelpdesk) && p.Scope().Allows(d)
}

// CanReadAudit reports whether the principal may read the audit log.
func (p Principal) CanReadAudit() bool { return p.Role == RoleAdmin || p.Role == RoleAuditor }

// CanReadMetrics reports whether the principal may scrape the server's metrics: the people who
// read the audit log. Metrics hold only counts, but a monitoring account given one of these roles
// must not be able to read keys, so helpdesk (which can) is left out.
func (p Principal) CanReadMetrics() bool { return p.Role == RoleAdmin || p.Role == RoleAuditor }

// CanReadReports reports whether the principal may read compliance reports.
func (p Principal) CanReadReports() bool {
	return p.Role == RoleAdmin || p.Role == RoleAuditor || p.Role == RoleHelpdesk
}

// CanAdminister reports whether the principal may manage users, tokens and settings.
func (p Principal) CanAdminister() bool { return p.Role == RoleAdmin }
