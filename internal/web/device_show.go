package web

import (
	"net/http"

	"github.com/google/uuid"
	"github.com/keyward/keyward/internal/escrow"
)

type deviceData struct {
	layout
	Device    escrow.DeviceDetail
	Tab       string
	CanRetire bool
}

// deviceShow serves GET /devices/{deviceId}: the device's Overview.
func (s *Server) deviceShow(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	id, err := pathDeviceID(r)
	if err != nil {
		return err
	}
	if err := s.authorize(r, isStaff(p), escrow.ActionDeviceRead, id); err != nil {
		return err
	}
	dev, err := s.store.GetDevice(r.Context(), p, id)
	if err != nil {
		return err
	}
	d := &deviceData{Device: dev, Tab: "overview", CanRetire: p.CanAdminister() && !dev.Retired()}
	d.Notice = notice(r)
	return s.render(w, r, http.StatusOK, viewDeviceOverview, dev.Name, "devices", d)
}

// pathDeviceID reads the {deviceId} path segment; anything that is not a device ID is no device.
func pathDeviceID(r *http.Request) (string, error) {
	id, err := uuid.Parse(r.PathValue("deviceId"))
	if err != nil {
		return "", escrow.Errorf(escrow.CodeNotFound, "There is no such device.")
	}
	return id.String(), nil
}
