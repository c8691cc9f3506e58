package escrow

import "time"

// ApprovalStatus is where a request to view a device's keys stands under two-person approval.
type ApprovalStatus string

// The approval statuses. Expired is never stored: a pending or approved request whose
// ExpiresAt has passed reads as expired, so expiry is exact without a job having run.
const (
	ApprovalPending  ApprovalStatus = "pending"  // waiting for a second person
	ApprovalApproved ApprovalStatus = "approved" // the requester may view the keys once, before ExpiresAt
	ApprovalDenied   ApprovalStatus = "denied"
	ApprovalUsed     ApprovalStatus = "used" // the approved view took place
	ApprovalExpired  ApprovalStatus = "expired"
)

// Valid reports whether s is one of the statuses.
func (s ApprovalStatus) Valid() bool {
	switch s {
	case ApprovalPending, ApprovalApproved, ApprovalDenied, ApprovalUsed, ApprovalExpired:
		return true
	}
	return false
}

// Approval is a request by a staff person to view a device's keys, which a second person
// approves or denies. An approved request lets its requester view that device's keys once,
// within the approval time from the approval.
type Approval struct {
	ID         string
	DeviceID   string
	DeviceName string
	// Requester is the sign-in name of the person who asked; never the one who decides.
	Requester string
	Reason    string
	Ticket    string
	Status    ApprovalStatus
	CreatedAt time.Time
	// ExpiresAt is when a pending request lapses, or, once approved, when the approval does.
	ExpiresAt time.Time
	DecidedBy string // the approver's or denier's sign-in name
	DecidedAt time.Time
	// DecisionReason is what the denier said, if anything.
	DecisionReason string
	UsedAt         time.Time
}

// StatusAt is the request's status at now: pending and approved requests past ExpiresAt are
// expired.
func (a Approval) StatusAt(now time.Time) ApprovalStatus {
	if (a.Status == ApprovalPending || a.Status == ApprovalApproved) && !now.Before(a.ExpiresAt) {
		return ApprovalExpired
	}
	return a.Status
}

// ApprovalFilter selects approval requests. Scope limits them to devices the caller may see.
type ApprovalFilter struct {
	Status ApprovalStatus // empty: any
	// Requester keeps the requests of this sign-in name only (a person's own requests).
	Requester string
	Scope     Scope
	Cursor    string
	Limit     int
}

// CanApprove reports whether the principal may approve or deny requests to view the device's
// keys: staff with the device in scope. That the approver is not the requester is checked
// where the request is decided.
func (p Principal) CanApprove(d Device) bool {
	return p.CanTakePartInApprovals() && p.Scope().Allows(d)
}

// CanTakePartInApprovals reports whether p may see the approval queue, ask for approval and
// decide requests (on devices in scope, never their own): admins and helpdesk.
func (p Principal) CanTakePartInApprovals() bool {
	return p.Role == RoleAdmin || p.Role == RoleHelpdesk
}
