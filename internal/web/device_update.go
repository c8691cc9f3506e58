package web

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/keyward/keyward/internal/escrow"
)

// deviceUpdate serves POST /devices/{deviceId}/update: an admin sets the device's owner (who
// may get its keys through self-service; empty clears it) and tags (what a helpdesk's scope
// selects), as PATCH /api/devices/{deviceId} does.
func (s *Server) deviceUpdate(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	id, err := s.routeDeviceID(r, escrow.ActionDeviceUpdate)
	if err != nil {
		return err
	}
	if err := s.authorize(r, p.CanAdminister(), escrow.ActionDeviceUpdate, id); err != nil {
		return err
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return escrow.Errorf(escrow.CodeInvalid, "The form could not be read.")
	}
	owner, tagText := r.PostForm.Get("owner"), r.PostForm.Get("tags")
	tags := strings.FieldsFunc(tagText, func(c rune) bool { return c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r' })
	_, err = s.store.UpdateDevice(r.Context(), origin(r, p), id, escrow.DeviceChange{OwnerUPN: &owner, Tags: &tags})
	if escrow.ErrorCode(err) == escrow.CodeInvalid {
		return s.renderOverview(w, r, id, func(d *deviceData) { d.Owner, d.Tags, d.Error = owner, tagText, escrow.ErrorMessage(err) })
	}
	if err != nil {
		return err
	}
	http.Redirect(w, r, "/devices/"+url.PathEscape(id)+"?notice=device-updated", http.StatusSeeOther)
	return nil
}

// deviceDispute serves POST /devices/{deviceId}/dispute: an admin marks a device disputed (a
// planted look-alike, an owner nobody can vouch for), with a reason, or clears the mark.
// Self-service neither lists a disputed device nor discloses its keys.
func (s *Server) deviceDispute(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	id, err := s.routeDeviceID(r, escrow.ActionDeviceDispute)
	if err != nil {
		return err
	}
	if err := s.authorize(r, p.CanAdminister(), escrow.ActionDeviceDispute, id); err != nil {
		return err
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return escrow.Errorf(escrow.CodeInvalid, "The form could not be read.")
	}
	disputed := r.PostForm.Get("disputed") == "true"
	reason := strings.TrimSpace(r.PostForm.Get("reason"))
	_, err = s.store.UpdateDevice(r.Context(), origin(r, p), id, escrow.DeviceChange{Disputed: &disputed, DisputeReason: reason})
	if escrow.ErrorCode(err) == escrow.CodeInvalid {
		msg := escrow.ErrorMessage(err)
		if reason == "" {
			msg = "Say why the device is disputed."
		}
		return s.renderOverview(w, r, id, func(d *deviceData) { d.DisputeReason, d.Error = reason, msg })
	}
	if err != nil {
		return err
	}
	code := "dispute-cleared"
	if disputed {
		code = "device-disputed"
	}
	http.Redirect(w, r, "/devices/"+url.PathEscape(id)+"?notice="+code, http.StatusSeeOther)
	return nil
}

// renderOverview shows the Overview again with a form's error, as 400.
func (s *Server) renderOverview(w http.ResponseWriter, r *http.Request, id string, fill func(*deviceData)) error {
	dev, err := s.getDevice(r, id, escrow.ActionDeviceUpdate)
	if err != nil {
		return err
	}
	d := overviewData(principal(r), dev)
	fill(d)
	return s.render(w, r, http.StatusBadRequest, viewDeviceOverview, dev.Name, "devices", d)
}
