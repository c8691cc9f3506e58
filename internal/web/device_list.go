package web

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/keyward/keyward/internal/escrow"
)

type deviceListData struct {
	layout
	Query    string
	Status   string
	Statuses []escrow.EscrowStatus
	Retired  bool // listing retired devices rather than those in service
	Devices  []escrow.DeviceDetail
	Next     string // URL of the next page, "" on the last
	First    string // URL of the first page, "" on it
	Error    string
}

// statusRetired is the status filter's choice that lists retired devices instead of those in
// service.
const statusRetired = "retired"

// pageSize is how many rows a portal listing shows at once.
const pageSize = 50

// deviceList serves GET /devices: the devices in the caller's scope, searched by name, owner or
// key ID prefix and filtered by escrow status, a page at a time with the store's cursors. Only
// devices in service are listed, unless status=retired asks for the retired ones alone.
func (s *Server) deviceList(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, isStaff(p), escrow.ActionDeviceRead, ""); err != nil {
		return err
	}
	q := r.URL.Query()
	d := &deviceListData{Query: strings.TrimSpace(q.Get("q")), Status: q.Get("status"),
		Statuses: []escrow.EscrowStatus{escrow.StatusEscrowed, escrow.StatusPending, escrow.StatusFailed, escrow.StatusNotAvailable}}
	f := escrow.DeviceFilter{Scope: p.Scope(), EscrowStatus: escrow.EscrowStatus(d.Status), Cursor: q.Get("cursor"), Limit: pageSize}
	status := http.StatusOK
	switch {
	case d.Status == statusRetired:
		// Retired devices have left the compliance views and have no escrow status that
		// matters any more, so "retired" is a choice of its own rather than a second filter.
		f.Retired, f.EscrowStatus, d.Retired = true, "", true
	case f.EscrowStatus != "" && !f.EscrowStatus.Valid():
		d.Status, f.EscrowStatus = "", ""
	}
	devices, next, err := s.store.SearchDevices(r.Context(), origin(r, p), f, d.Query)
	switch {
	case escrow.ErrorCode(err) == escrow.CodeInvalid:
		d.Error, status = escrow.ErrorMessage(err), http.StatusBadRequest
	case err != nil:
		return err
	}
	d.Devices = devices
	base := url.Values{}
	if d.Query != "" {
		base.Set("q", d.Query)
	}
	if d.Status != "" {
		base.Set("status", d.Status)
	}
	if next != "" {
		v := url.Values{}
		for k, vs := range base {
			v[k] = vs
		}
		v.Set("cursor", next)
		d.Next = "/devices?" + v.Encode()
	}
	if f.Cursor != "" {
		d.First = "/devices?" + base.Encode()
	}
	return s.render(w, r, status, viewDevices, "Devices", "devices", d)
}
