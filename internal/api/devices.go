package api

import (
	"net/http"
	"strings"

	"github.com/keyward/keyward/internal/escrow"
)

// devicesList serves GET /api/devices.
func (s *Server) devicesList(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanList(), escrow.ActionDeviceRead, ""); err != nil {
		return err
	}
	q := newQuery(r, "escrowStatus", "retired", "limit", "cursor")
	f := escrow.DeviceFilter{
		Scope:        p.Scope(),
		EscrowStatus: escrow.EscrowStatus(q.str("escrowStatus", 32)),
		Retired:      q.boolean("retired"),
		Cursor:       q.str("cursor", 1024),
		Limit:        q.limit(100),
	}
	if f.EscrowStatus != "" && !f.EscrowStatus.Valid() {
		q.fail(escrow.Errorf(escrow.CodeInvalid, "escrowStatus: must be escrowed, pending, failed or notAvailable"))
	}
	if q.err != nil {
		return q.err
	}
	devices, next, err := s.store.ListDevices(r.Context(), f)
	if err != nil {
		return err
	}
	out := listJSON[deviceJSON]{Items: make([]deviceJSON, 0, len(devices)), NextCursor: next}
	for _, d := range devices {
		out.Items = append(out.Items, toDeviceJSON(d, false))
	}
	return writeJSON(w, http.StatusOK, out)
}

// devicesGet serves GET /api/devices/{deviceId}: the device, its volumes and escrow status.
func (s *Server) devicesGet(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	deviceID, err := s.routeDeviceID(r, escrow.ActionDeviceRead)
	if err != nil {
		return err
	}
	if err := s.authorize(r, p.CanList(), escrow.ActionDeviceRead, deviceID); err != nil {
		return err
	}
	if err := newQuery(r).err; err != nil {
		return err
	}
	d, err := s.store.GetDevice(r.Context(), p, deviceID)
	if err != nil {
		return s.refused(r, escrow.ActionDeviceRead, deviceID, err)
	}
	return writeJSON(w, http.StatusOK, toDeviceJSON(d, true))
}

// refused records a refusal of a device route, a device outside the caller's scope or one that
// does not exist, as a denied event of action and returns err; other errors pass unrecorded.
func (s *Server) refused(r *http.Request, action, deviceID string, err error) error {
	var detail string
	switch escrow.ErrorCode(err) {
	case escrow.CodeForbidden:
		detail = "device outside the caller's scope"
	case escrow.CodeNotFound:
		detail = "no such device"
	default:
		return err
	}
	e := origin(r, principal(r)).Event(action, escrow.OutcomeDenied)
	e.DeviceID, e.Detail = deviceID, detail
	if rerr := s.store.Record(r.Context(), e); rerr != nil {
		return rerr
	}
	return err
}

type deviceUpdateRequest struct {
	OwnerUPN *string   `json:"ownerUpn"`
	Tags     *[]string `json:"tags"`
	Disputed *bool     `json:"disputed"`
	Reason   string    `json:"reason"`
}

// devicesUpdate serves PATCH /api/devices/{deviceId}: an admin sets the device's owner or tags,
// or marks it disputed (or clears the mark, with a reason for marking).
func (s *Server) devicesUpdate(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	deviceID, err := s.routeDeviceID(r, escrow.ActionDeviceUpdate)
	if err != nil {
		return err
	}
	if err := s.authorize(r, p.CanAdminister(), escrow.ActionDeviceUpdate, deviceID); err != nil {
		return err
	}
	var req deviceUpdateRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	d, err := s.store.UpdateDevice(r.Context(), origin(r, p), deviceID, escrow.DeviceChange{
		OwnerUPN: req.OwnerUPN, Tags: req.Tags, Disputed: req.Disputed, DisputeReason: strings.TrimSpace(req.Reason),
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, toDeviceJSON(d, true))
}

type retireRequest struct {
	Reason string `json:"reason"`
}

// devicesRetire serves POST /api/devices/{deviceId}/retire: an admin takes a decommissioned or
// wiped device out of service (store.RetireDevice says what that changes).
func (s *Server) devicesRetire(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	deviceID, err := s.routeDeviceID(r, escrow.ActionDeviceRetire)
	if err != nil {
		return err
	}
	if err := s.authorize(r, p.CanAdminister(), escrow.ActionDeviceRetire, deviceID); err != nil {
		return err
	}
	var req retireRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	d, err := s.store.RetireDevice(r.Context(), origin(r, p), deviceID, strings.TrimSpace(req.Reason))
	if escrow.ErrorCode(err) == escrow.CodeNotFound {
		return s.refused(r, escrow.ActionDeviceRetire, deviceID, err)
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, toDeviceJSON(d, true))
}

// routeDeviceID reads the {deviceId} path segment of a device or key route. Anything that is not
// a device ID is no device, and refused as such: a denied event of action.
func (s *Server) routeDeviceID(r *http.Request, action string) (string, error) {
	id, err := pathDeviceID(r)
	if err != nil {
		return "", s.refused(r, action, "", err)
	}
	return id, nil
}
