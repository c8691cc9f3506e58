package api

import (
	"net/http"

	"github.com/keyward/keyward/internal/escrow"
)

type rotateRequest struct {
	VolumeID string `json:"volumeId"`
	Reason   string `json:"reason"`
	Ticket   string `json:"ticket"`
}

// keysRotate serves POST /api/devices/security/bitlocker/keys/{deviceId}/rotate.
func (s *Server) keysRotate(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	deviceID, err := s.routeDeviceID(r, escrow.ActionRotateRequest)
	if err != nil {
		return err
	}
	if err := s.authorize(r, p.Role == escrow.RoleAdmin || p.Role == escrow.RoleHelpdesk, escrow.ActionRotateRequest, deviceID); err != nil {
		return err
	}
	var req rotateRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return err
	}
	if err := escrow.CheckText("volumeId", req.VolumeID, false, 256); err != nil {
		return err
	}
	if err := escrow.CheckText("reason", req.Reason, false, 500); err != nil {
		return err
	}
	rotations, err := s.store.RequestRotation(r.Context(), origin(r, p), deviceID, req.VolumeID,
		escrow.Access{Reason: req.Reason, Ticket: req.Ticket, Role: p.Role}, p.CanRotate)
	if err != nil {
		return err
	}
	out := listJSON[rotationJSON]{Items: make([]rotationJSON, 0, len(rotations))}
	for _, rot := range rotations {
		out.Items = append(out.Items, toRotationJSON(rot))
	}
	return writeJSON(w, http.StatusAccepted, out)
}
