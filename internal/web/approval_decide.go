package web

import (
	"net/http"
	"strings"

	"github.com/google/uuid"
	"github.com/keyward/keyward/internal/escrow"
)

// approvalApprove serves POST /approvals/{id}/approve.
func (s *Server) approvalApprove(w http.ResponseWriter, r *http.Request) error {
	return s.approvalDecide(w, r, true)
}

// approvalDeny serves POST /approvals/{id}/deny, with an optional reason.
func (s *Server) approvalDeny(w http.ResponseWriter, r *http.Request) error {
	return s.approvalDecide(w, r, false)
}

// approvalDecide approves or denies a pending request. The store decides whether the person
// may (the device in their scope, and never their own request) and records the decision, or
// the refusal, with it; a refusal comes back on the Approvals page.
func (s *Server) approvalDecide(w http.ResponseWriter, r *http.Request, approve bool) error {
	p := principal(r)
	action := escrow.ActionKeyDeny
	if approve {
		action = escrow.ActionKeyApprove
	}
	if err := s.authorize(r, p.CanTakePartInApprovals(), action, ""); err != nil {
		return err
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return escrow.Errorf(escrow.CodeInvalid, "The form could not be read.")
	}
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		return escrow.Errorf(escrow.CodeNotFound, "There is no such request.")
	}
	_, err = s.store.DecideApproval(r.Context(), origin(r, p), id.String(), approve, strings.TrimSpace(r.PostForm.Get("reason")), p.CanApprove)
	if c := escrow.ErrorCode(err); c == escrow.CodeForbidden || c == escrow.CodeConflict || c == escrow.CodeInvalid || c == escrow.CodeNotFound {
		d, lerr := s.loadApprovals(r)
		if lerr != nil {
			return lerr
		}
		d.Error = escrow.ErrorMessage(err)
		return s.render(w, r, statusOf[c], viewApprovals, "Approvals", "approvals", d)
	}
	if err != nil {
		return err
	}
	done := "approval-denied"
	if approve {
		done = "approval-approved"
	}
	http.Redirect(w, r, "/approvals?notice="+done, http.StatusSeeOther)
	return nil
}
