package web

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/keyward/keyward/internal/escrow"
)

// retireSubmit serves POST /devices/{deviceId}/retire: the confirmed retirement. The device's
// token is refused from now on, and the device page says it was retired.
func (s *Server) retireSubmit(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	id, err := s.routeDeviceID(r, escrow.ActionDeviceRetire)
	if err != nil {
		return err
	}
	if err := s.authorize(r, p.CanAdminister(), escrow.ActionDeviceRetire, id); err != nil {
		return err
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return escrow.Errorf(escrow.CodeInvalid, "The form could not be read.")
	}
	reason := strings.TrimSpace(r.PostForm.Get("reason"))
	var formErr error
	if reason == "" {
		formErr = escrow.Errorf(escrow.CodeInvalid, "Say why the device is retired.")
	} else {
		_, formErr = s.store.RetireDevice(r.Context(), origin(r, p), id, reason)
		if c := escrow.ErrorCode(formErr); formErr != nil && c != escrow.CodeInvalid && c != escrow.CodeConflict {
			return formErr
		}
	}
	if formErr != nil {
		return s.renderRetire(w, r, statusOf[escrow.ErrorCode(formErr)], id, reason, escrow.ErrorMessage(formErr))
	}
	http.Redirect(w, r, "/devices/"+url.PathEscape(id)+"?notice=device-retired", http.StatusSeeOther)
	return nil
}
