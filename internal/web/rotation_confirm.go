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
	Ticket  ticketField
	Error   string
}

// ticketField is the ticket number input of the View recovery key and Rotate forms: the value
// sent, and the rules the settings set, so the form says what is expected before it is sent.
type ticketField struct {
	Value    string
	Required bool
	Pattern  string
}

// newTicketField reads the ticket rules; without the settings (storage down) the form shows
// none, and the store still applies them.
func (s *Server) newTicketField(r *http.Request) ticketField {
	set, err := s.store.Settings(r.Context())
	if err != nil {
		return ticketField{}
	}
	return ticketField{Required: set.TicketRequired, Pattern: set.TicketPattern}
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
	d := &rotateData{deviceData: deviceData{Device: dev, Tab: "security"}, Ticket: s.newTicketField(r)}
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
