package api

import (
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/keyward/keyward/internal/escrow"
)

// Two-person approval (settings approvalRequired, approvalForAdmins, approvalTTL): a staff
// person's view of a device's keys waits for another staff person's approval. The view itself
// (GET .../keys/{deviceId}) makes the request and answers 202; POST /api/approvals makes it
// without trying the view. Approvers list the queue, approve or deny; the requester's next
// view within the approval time uses the approval up.

type approvalJSON struct {
	ID             string                `json:"id"`
	DeviceID       string                `json:"deviceId"`
	DeviceName     string                `json:"deviceName"`
	Requester      string                `json:"requester"`
	Reason         string                `json:"reason"`
	Ticket         string                `json:"ticket,omitempty"`
	Status         escrow.ApprovalStatus `json:"status"`
	CreatedAt      time.Time             `json:"createdAt"`
	ExpiresAt      time.Time             `json:"expiresAt"`
	DecidedBy      string                `json:"decidedBy,omitempty"`
	DecidedAt      *time.Time            `json:"decidedAt"`
	DecisionReason string                `json:"decisionReason,omitempty"`
	UsedAt         *time.Time            `json:"usedAt"`
}

func toApprovalJSON(a escrow.Approval) approvalJSON {
	return approvalJSON{ID: a.ID, DeviceID: a.DeviceID, DeviceName: a.DeviceName, Requester: a.Requester, Reason: a.Reason,
		Ticket: a.Ticket, Status: a.Status, CreatedAt: a.CreatedAt.UTC(), ExpiresAt: a.ExpiresAt.UTC(), DecidedBy: a.DecidedBy,
		DecidedAt: timeOrNull(a.DecidedAt), DecisionReason: a.DecisionReason, UsedAt: timeOrNull(a.UsedAt)}
}

// approvalsList serves GET /api/approvals (admin, helpdesk): requests on devices in the
// caller's scope; status filters (default pending), mine=true keeps the caller's own requests
// (any status unless one is given). Pending and approved ones come soonest to lapse first,
// the others newest first.
func (s *Server) approvalsList(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanTakePartInApprovals(), "approval.list", ""); err != nil {
		return err
	}
	q := newQuery(r, "status", "mine", "limit", "cursor")
	f := escrow.ApprovalFilter{Status: escrow.ApprovalStatus(q.values.Get("status")), Scope: p.Scope(),
		Limit: q.limit(100), Cursor: q.values.Get("cursor")}
	if q.boolean("mine") {
		f.Requester = p.Actor.Name
	}
	if q.err != nil {
		return q.err
	}
	if f.Status != "" && !f.Status.Valid() {
		return escrow.Errorf(escrow.CodeInvalid, "status: must be pending, approved, denied, used or expired")
	}
	items, next, err := s.store.ListApprovals(r.Context(), f)
	if err != nil {
		return err
	}
	out := listJSON[approvalJSON]{Items: make([]approvalJSON, 0, len(items)), NextCursor: next}
	for _, a := range items {
		out.Items = append(out.Items, toApprovalJSON(a))
	}
	return writeJSON(w, http.StatusOK, out)
}

type approvalRequest struct {
	DeviceID string `json:"deviceId"`
	Reason   string `json:"reason"`
	Ticket   string `json:"ticket"`
}

// approvalsCreate serves POST /api/approvals: {"deviceId", "reason", "ticket"} asks for an
// approval to view the device's keys. 201 with the request (or 200 with the caller's open one
// for the device); 409 when the caller's views need no approval.
func (s *Server) approvalsCreate(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanTakePartInApprovals(), escrow.ActionKeyRequest, ""); err != nil {
		return err
	}
	var req approvalRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	deviceID, err := parseDeviceID(req.DeviceID)
	if err != nil {
		return err
	}
	if err := escrow.CheckText("reason", req.Reason, true, 500); err != nil {
		return escrow.Errorf(escrow.CodeInvalid, "%s; say why the key is needed", escrow.ErrorMessage(err))
	}
	a, created, err := s.store.RequestApproval(r.Context(), origin(r, p), deviceID, escrow.Access{Reason: req.Reason, Ticket: req.Ticket, Role: p.Role},
		func(dev escrow.Device, _ escrow.Settings) bool { return p.CanViewMaterial(dev, false) })
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return writeJSON(w, status, toApprovalJSON(a))
}

type decisionRequest struct {
	Reason string `json:"reason"`
}

// approvalsApprove serves POST /api/approvals/{id}/approve (admin, helpdesk; never the
// requester).
func (s *Server) approvalsApprove(w http.ResponseWriter, r *http.Request) error {
	return s.decide(w, r, true)
}

// approvalsDeny serves POST /api/approvals/{id}/deny, with an optional {"reason"}.
func (s *Server) approvalsDeny(w http.ResponseWriter, r *http.Request) error {
	return s.decide(w, r, false)
}

func (s *Server) decide(w http.ResponseWriter, r *http.Request, approve bool) error {
	p := principal(r)
	action := escrow.ActionKeyDeny
	if approve {
		action = escrow.ActionKeyApprove
	}
	if err := s.authorize(r, p.CanTakePartInApprovals(), action, ""); err != nil {
		return err
	}
	var req decisionRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return err
	}
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil || len(r.PathValue("id")) != 36 {
		return escrow.Errorf(escrow.CodeNotFound, "approval: no such request")
	}
	a, err := s.store.DecideApproval(r.Context(), origin(r, p), id.String(), approve, req.Reason, p.CanApprove)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, toApprovalJSON(a))
}
