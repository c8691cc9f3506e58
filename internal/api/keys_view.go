package api

import (
	"net/http"

	"github.com/keyward/keyward/internal/escrow"
)

type deviceKeysJSON struct {
	DeviceID     string              `json:"deviceId"`
	DeviceName   string              `json:"deviceName"`
	EscrowStatus escrow.EscrowStatus `json:"escrowStatus"`
	Keys         []keyJSON           `json:"keys"`
}

// keysView serves GET /api/devices/security/bitlocker/keys/{deviceId}: the device's keys with
// their material. Each key disclosed is audited in the same transaction as the disclosure.
// Where the settings hold the caller's views for a second person's approval, the answer is
// 202 with the approval request instead, until it is approved; the next view uses it up.
func (s *Server) keysView(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	q := newQuery(r, "reason", "ticket")
	reason := q.str("reason", 500)
	ticket := q.values.Get("ticket") // checked with the settings' ticket rules by the store
	if q.err != nil {
		return q.err
	}
	if reason == "" {
		return escrow.Errorf(escrow.CodeInvalid, "reason: required; say why the key is needed")
	}
	deviceID, err := s.routeDeviceID(r, escrow.ActionKeyRead)
	if err != nil {
		return err
	}
	// The check runs inside the disclosure's transaction, on the device as stored then, and a
	// refusal is recorded there as a denied key.read.
	markAuthorized(r)
	d, err := s.store.Disclose(r.Context(), origin(r, p), deviceID, escrow.Access{Reason: reason, Ticket: ticket, Role: p.Role},
		func(dev escrow.Device, set escrow.Settings) bool {
			return p.CanViewMaterial(dev, set.SelfServiceEnabled)
		})
	if err != nil {
		return err
	}
	if d.Pending != nil {
		// Two-person approval: nothing is disclosed until someone else approves the request.
		return writeJSON(w, http.StatusAccepted, toApprovalJSON(*d.Pending))
	}
	out := deviceKeysJSON{DeviceID: d.Device.ID, DeviceName: d.Device.Name, EscrowStatus: d.Device.Status.Status, Keys: make([]keyJSON, 0, len(d.Keys))}
	for _, k := range d.Keys {
		out.Keys = append(out.Keys, toDisclosedKeyJSON(k))
	}
	return writeJSON(w, http.StatusOK, out)
}

// pathDeviceID reads the {deviceId} path segment; anything that is not a device ID is no device.
func pathDeviceID(r *http.Request) (string, error) {
	id, err := parseDeviceID(r.PathValue("deviceId"))
	if err != nil {
		return "", escrow.Errorf(escrow.CodeNotFound, "device: no such device")
	}
	return id, nil
}
