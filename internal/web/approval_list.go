package web

import (
	"net/http"

	"github.com/keyward/keyward/internal/escrow"
)

type approvalsData struct {
	layout
	// Queue is the pending requests the person may decide: in their scope, not their own.
	Queue []escrow.Approval
	// Mine is the person's own recent requests, any status.
	Mine  []escrow.Approval
	Error string
}

// approvalList serves GET /approvals (admin, helpdesk): the queue of views waiting for a
// second person's approval, with Approve and Deny on each, and the person's own requests.
func (s *Server) approvalList(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanTakePartInApprovals(), "approval.list", ""); err != nil {
		return err
	}
	d, err := s.loadApprovals(r)
	if err != nil {
		return err
	}
	d.Notice = notice(r)
	return s.render(w, r, http.StatusOK, viewApprovals, "Approvals", "approvals", d)
}

// loadApprovals gathers the queue and the person's own requests: one page of each, since
// requests lapse within the approval time and the queue stays short.
func (s *Server) loadApprovals(r *http.Request) (*approvalsData, error) {
	p := principal(r)
	pending, _, err := s.store.ListApprovals(r.Context(), escrow.ApprovalFilter{Status: escrow.ApprovalPending, Scope: p.Scope(), Limit: 200})
	if err != nil {
		return nil, err
	}
	d := &approvalsData{}
	for _, a := range pending {
		if !escrow.SameName(a.Requester, p.Actor.Name) {
			d.Queue = append(d.Queue, a)
		}
	}
	if d.Mine, _, err = s.store.ListApprovals(r.Context(), escrow.ApprovalFilter{Requester: p.Actor.Name, Scope: p.Scope(), Limit: 20}); err != nil {
		return nil, err
	}
	return d, nil
}
