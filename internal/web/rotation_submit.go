package web

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/keyward/keyward/internal/escrow"
)

// rotationSubmit serves POST /devices/{deviceId}/rotate: the confirmed rotation request. The
// device replaces the recovery password the next time it checks in; the page says so.
func (s *Server) rotationSubmit(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	id, err := s.routeDeviceID(r, escrow.ActionRotateRequest)
	if err != nil {
		return err
	}
	if err := s.authorize(r, p.Role == escrow.RoleAdmin || p.Role == escrow.RoleHelpdesk, escrow.ActionRotateRequest, id); err != nil {
		return err
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return escrow.Errorf(escrow.CodeInvalid, "The form could not be read.")
	}
	volume := r.PostForm.Get("volume")
	reason := strings.TrimSpace(r.PostForm.Get("reason"))
	ticket := r.PostForm.Get("ticket") // the store applies the settings' ticket rules
	formErr := escrow.CheckText("volume", volume, false, 256)
	if formErr == nil {
		formErr = escrow.CheckText("reason", reason, false, maxReason)
	}
	if formErr == nil && reason == "" {
		formErr = escrow.Errorf(escrow.CodeInvalid, "Say why the key should be rotated.")
	}
	if formErr == nil {
		_, formErr = s.store.RequestRotation(r.Context(), origin(r, p), id, volume, escrow.Access{Reason: reason, Ticket: ticket, Role: p.Role}, p.CanRotate)
		if c := escrow.ErrorCode(formErr); formErr != nil && c != escrow.CodeInvalid && c != escrow.CodeNotEncrypted && !(c == escrow.CodeNotFound && volume != "") {
			return formErr
		}
	}
	if formErr != nil {
		d, err := s.loadRotate(r, id)
		if err != nil {
			return err
		}
		d.Volume, d.Reason, d.Ticket.Value, d.Error = volume, reason, ticket, escrow.ErrorMessage(formErr)
		return s.render(w, r, statusOf[escrow.ErrorCode(formErr)], viewRotateConfirm, d.Device.Name+" · Rotate key", "devices", d)
	}
	http.Redirect(w, r, "/devices/"+url.PathEscape(id)+"/security?notice=rotation-requested", http.StatusSeeOther)
	return nil
}
