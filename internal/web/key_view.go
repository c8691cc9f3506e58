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
// keys shown, never cached.
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
	// Roles that may never see material go straight to the store, which refuses and records
	// the attempt; the form's errors are only for those who could succeed.
	mayView := p.Role == escrow.RoleAdmin || p.Role == escrow.RoleHelpdesk
	if reasonErr != nil && mayView {
		d, err := s.loadSecurity(r, id)
		if err != nil {
			return err
		}
		d.Error, d.Reason, d.Details = escrow.ErrorMessage(reasonErr), r.PostForm.Get("reason"), r.PostForm.Get("details")
		return s.render(w, r, http.StatusBadRequest, viewDeviceSecurity, d.Device.Name+" · Security", "devices", d)
	}
	disclosure, err := s.store.Disclose(r.Context(), origin(r, p), id, reasonText, func(dev escrow.Device, set escrow.Settings) bool {
		return mayView && p.CanViewMaterial(dev, set.SelfServiceEnabled)
	})
	if err != nil {
		return err
	}
	d, err := s.loadSecurity(r, id)
	if err != nil {
		return err
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
