package web

import (
	"net/http"

	"github.com/keyward/keyward/internal/escrow"
)

type rotateData struct {
	deviceData
	Volumes []escrow.VolumeDetail // the volumes a rotation can target: BitLocker on
	Volume  string
	Reason  string
	Error   string
}

// rotationConfirm serves GET /devices/{deviceId}/rotate: the confirmation step before a
// rotation is requested, with the choice of volume and a reason.
func (s *Server) rotationConfirm(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	id, err := s.routeDeviceID(r, escrow.ActionRotateRequest)
	if err != nil {
		return err
	}
	if err := s.authorize(r, p.Role == escrow.RoleAdmin || p.Role == escrow.RoleHelpdesk, escrow.ActionRotateRequest, id); err != nil {
		return err
	}
	d, err := s.loadRotate(r, id)
	if err != nil {
		return err
	}
	return s.render(w, r, http.StatusOK, viewRotateConfirm, d.Device.Name+" · Rotate key", "devices", d)
}

func (s *Server) loadRotate(r *http.Request, id string) (*rotateData, error) {
	p := principal(r)
	dev, err := s.getDevice(r, id, escrow.ActionRotateRequest)
	if err != nil {
		return nil, err
	}
	if !p.CanRotate(dev.Device) {
		return nil, escrow.Errorf(escrow.CodeForbidden, "You may not rotate this device's keys.")
	}
	d := &rotateData{deviceData: deviceData{Device: dev, Tab: "security"}}
	for _, v := range dev.Volumes {
		if rotatable(v.Volume) {
			d.Volumes = append(d.Volumes, v)
		}
	}
	return d, nil
}

// rotatable reports whether a rotation can target the volume: BitLocker is on for it, or its
// state has not been reported yet.
func rotatable(v escrow.Volume) bool {
	return v.ProtectionStatus == "" || (v.Present && v.Encrypted())
}
