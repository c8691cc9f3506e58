package web

import (
	"net/http"

	"github.com/keyward/keyward/internal/escrow"
)

type retireData struct {
	deviceData
	Reason string
	Error  string
}

// retireConfirm serves GET /devices/{deviceId}/retire: the confirmation step before an admin
// retires a decommissioned or wiped device, with the reason.
func (s *Server) retireConfirm(w http.ResponseWriter, r *http.Request) error {
	id, err := s.routeDeviceID(r, escrow.ActionDeviceRetire)
	if err != nil {
		return err
	}
	if err := s.authorize(r, principal(r).CanAdminister(), escrow.ActionDeviceRetire, id); err != nil {
		return err
	}
	return s.renderRetire(w, r, http.StatusOK, id, "", "")
}

// renderRetire shows the confirmation form of the device, with the reason given so far and the
// error that sent it back, if any.
func (s *Server) renderRetire(w http.ResponseWriter, r *http.Request, status int, id, reason, formErr string) error {
	dev, err := s.getDevice(r, id, escrow.ActionDeviceRetire)
	if err != nil {
		return err
	}
	d := &retireData{deviceData: deviceData{Device: dev, Tab: "overview"}, Reason: reason, Error: formErr}
	if dev.Retired() && formErr == "" {
		d.Error = "This device is already retired."
	}
	return s.render(w, r, status, viewRetireConfirm, dev.Name+" · Retire device", "devices", d)
}
