package web

import (
	"net/http"
	"strings"

	"github.com/google/uuid"
	"github.com/keyward/keyward/internal/escrow"
)

type deviceData struct {
	layout
	Device    escrow.DeviceDetail
	Tab       string
	CanRetire bool
	CanEdit   bool // admins change owner and tags, and mark the device disputed
	// The owner and tags forms, kept when they come back with an error.
	Owner, Tags, DisputeReason string
	Error                      string
}

// deviceShow serves GET /devices/{deviceId}: the device's Overview.
func (s *Server) deviceShow(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	id, err := s.routeDeviceID(r, escrow.ActionDeviceRead)
	if err != nil {
		return err
	}
	if err := s.authorize(r, isStaff(p), escrow.ActionDeviceRead, id); err != nil {
		return err
	}
	dev, err := s.getDevice(r, id, escrow.ActionDeviceRead)
	if err != nil {
		return err
	}
	d := overviewData(p, dev)
	d.Notice = notice(r)
	return s.render(w, r, http.StatusOK, viewDeviceOverview, dev.Name, "devices", d)
}

func overviewData(p escrow.Principal, dev escrow.DeviceDetail) *deviceData {
	return &deviceData{Device: dev, Tab: "overview", CanRetire: p.CanAdminister() && !dev.Retired(), CanEdit: p.CanAdminister(),
		Owner: dev.OwnerUPN, Tags: strings.Join(dev.Tags, " ")}
}

// getDevice loads a device for a device page. A refusal (outside the caller's scope, or no such
// device) is recorded as a denied event of action, so that every refused device page is on
// record like a refused API call.
func (s *Server) getDevice(r *http.Request, id, action string) (escrow.DeviceDetail, error) {
	dev, err := s.store.GetDevice(r.Context(), principal(r), id)
	var detail string
	switch escrow.ErrorCode(err) {
	case escrow.CodeForbidden:
		detail = "device outside the caller's scope"
	case escrow.CodeNotFound:
		detail = "no such device"
	default:
		return dev, err
	}
	e := origin(r, principal(r)).Event(action, escrow.OutcomeDenied)
	e.DeviceID, e.Detail = id, detail
	if rerr := s.store.Record(r.Context(), e); rerr != nil {
		return dev, rerr
	}
	return dev, err
}

// pathDeviceID reads the {deviceId} path segment; anything that is not a device ID is no device.
func pathDeviceID(r *http.Request) (string, error) {
	id, err := uuid.Parse(r.PathValue("deviceId"))
	if err != nil {
		return "", escrow.Errorf(escrow.CodeNotFound, "There is no such device.")
	}
	return id.String(), nil
}

// routeDeviceID reads the {deviceId} path segment of a device page or form. Anything that is not
// a device ID is no device, and refused as such: a denied event of action.
func (s *Server) routeDeviceID(r *http.Request, action string) (string, error) {
	id, err := pathDeviceID(r)
	if err != nil {
		e := origin(r, principal(r)).Event(action, escrow.OutcomeDenied)
		e.Detail = "no such device"
		if rerr := s.store.Record(r.Context(), e); rerr != nil {
			return "", rerr
		}
	}
	return id, err
}
