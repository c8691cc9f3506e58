package web

import (
	"net/http"
	"slices"

	"github.com/keyward/keyward/internal/escrow"
)

type securityData struct {
	deviceData
	Keys      []escrow.RecoveryKey
	Rotations []escrow.Rotation
	CanView   bool
	CanRotate bool
	Reasons   []reason
	Reason    string // the reason chosen, kept when the form comes back with an error
	Details   string
	Error     string
	// Disclosed holds the keys just viewed, with their material; empty otherwise.
	Disclosed  []escrow.DisclosedKey
	AutoRotate bool
	Ticket     ticketField
	// NeedsApproval says the person's views of this device's keys wait for a second person;
	// Pending is the request just made or found, waiting.
	NeedsApproval bool
	Pending       *escrow.Approval
}

// deviceSecurity serves GET /devices/{deviceId}/security: BitLocker volumes, key metadata,
// escrow status per volume and device, verification, rotation history, and the View recovery
// key and Rotate key actions for those whose role allows them. Listing the keys is a key
// listing like the API's, and audited as one.
func (s *Server) deviceSecurity(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	id, err := s.routeDeviceID(r, escrow.ActionDeviceRead)
	if err != nil {
		return err
	}
	if err := s.authorize(r, isStaff(p), escrow.ActionDeviceRead, id); err != nil {
		return err
	}
	d, err := s.loadSecurity(r, id)
	if err != nil {
		return err
	}
	d.Notice = notice(r)
	return s.render(w, r, http.StatusOK, viewDeviceSecurity, d.Device.Name+" · Security", "devices", d)
}

// loadSecurity gathers what the Security section shows.
func (s *Server) loadSecurity(r *http.Request, id string) (*securityData, error) {
	p := principal(r)
	dev, err := s.getDevice(r, id, escrow.ActionDeviceRead)
	if err != nil {
		return nil, err
	}
	keys, _, err := s.store.ListKeys(r.Context(), origin(r, p), escrow.KeyFilter{Scope: p.Scope(), DeviceID: id, Limit: 1000})
	if err != nil {
		return nil, err
	}
	rotations, err := s.store.DeviceRotations(r.Context(), p, id, 50)
	if err != nil {
		return nil, err
	}
	d := &securityData{
		deviceData: deviceData{Device: dev, Tab: "security"},
		Keys:       keys,
		Rotations:  rotations,
		CanView:    p.CanViewMaterial(dev.Device, false),
		CanRotate:  p.CanRotate(dev.Device) && slices.ContainsFunc(dev.Volumes, func(v escrow.VolumeDetail) bool { return rotatable(v.Volume) }),
		Reasons:    standardReasons,
		Ticket:     s.newTicketField(r),
	}
	if set, err := s.store.Settings(r.Context()); err == nil {
		d.NeedsApproval = set.NeedsApproval(escrow.Access{Role: p.Role})
	}
	return d, nil
}
