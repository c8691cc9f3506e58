package web

import (
	"net/http"

	"github.com/keyward/keyward/internal/escrow"
)

// keyView serves POST /devices/{deviceId}/keys: View recovery key. The reason comes in the
// form body, not the URL, so it stays out of logs and history. The disclosure is the store's
// (one key.read per key, in the disclosure's transaction, and the automatic rotation after
// it); whether the caller may see the material is decided there, on the device as stored then,
// and a refusal is recorded there as a denied key.read. The Security page comes back with the
// keys shown, never cached. A ticket the settings refuse brings the form back with the message
// (nothing disclosed or recorded); where two-person approval holds the view, the page comes back
// (202) with the request waiting instead of keys.
func (s *Server) keyView(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	id, err := s.routeDeviceID(r, escrow.ActionKeyRead)
	if err != nil {
		return err
	}
	markAuthorized(r) // checked inside the disclosure's transaction, as in the API
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return escrow.Errorf(escrow.CodeInvalid, "The form could not be read.")
	}
	reasonText, reasonErr := formReason(r)
	ticket := r.PostForm.Get("ticket") // the store applies the settings' ticket rules
	// Roles that may never see material go straight to the store, which refuses and records
	// the attempt; the form's errors are only for those who could succeed.
	mayView := p.Role == escrow.RoleAdmin || p.Role == escrow.RoleHelpdesk
	formError := func(err error) error {
		d, lerr := s.loadSecurity(r, id)
		if lerr != nil {
			return lerr
		}
		d.Error, d.Reason, d.Details, d.Ticket.Value = escrow.ErrorMessage(err), r.PostForm.Get("reason"), r.PostForm.Get("details"), ticket
		return s.render(w, r, http.StatusBadRequest, viewDeviceSecurity, d.Device.Name+" · Security", "devices", d)
	}
	if reasonErr != nil && mayView {
		return formError(reasonErr)
	}
	disclosure, err := s.store.Disclose(r.Context(), origin(r, p), id, escrow.Access{Reason: reasonText, Ticket: ticket, Role: p.Role},
		func(dev escrow.Device, set escrow.Settings) bool {
			return mayView && p.CanViewMaterial(dev, set.SelfServiceEnabled)
		})
	if escrow.ErrorCode(err) == escrow.CodeInvalid && mayView {
		return formError(err) // the ticket: nothing was disclosed or recorded as a read
	}
	if err != nil {
		return err
	}
	d, err := s.loadSecurity(r, id)
	if err != nil {
		return err
	}
	if disclosure.Pending != nil {
		// Two-person approval: the request waits in the queue; nothing was disclosed.
		d.Pending = disclosure.Pending
		return s.render(w, r, http.StatusAccepted, viewDeviceSecurity, d.Device.Name+" · Waiting for approval", "devices", d)
	}
	d.Disclosed = disclosure.Keys
	if len(d.Disclosed) == 0 {
		d.Error = "Keyward holds no recovery key for this device that can still be viewed."
	}
	if set, err := s.store.Settings(r.Context()); err == nil {
		d.AutoRotate = set.AutoRotateOnDisclosure
	}
	return s.render(w, r, http.StatusOK, viewDeviceSecurity, d.Device.Name+" · Recovery key", "devices", d)
}
