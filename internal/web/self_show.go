package web

import (
	"net/http"

	"github.com/keyward/keyward/internal/escrow"
)

type selfData struct {
	layout
	Devices []escrow.DeviceDetail
	Reasons []reason
	// The form, kept when it comes back with an error.
	KeyID, DeviceID, Reason, Details string
	Error                            string
}

// ownScope is the devices a person owns: those whose owner is their sign-in name, whatever
// their role, and that no admin marked disputed. Self-service is about one's own computer; a
// disputed device (a look-alike claiming the person as its owner) is never offered.
func ownScope(p escrow.Principal) escrow.Scope {
	if p.Email == "" {
		return escrow.Scope{}
	}
	return escrow.Scope{OwnerUPN: p.Email, Undisputed: true}
}

// errSelfServiceOff is the answer of every self-service page while the setting is off.
var errSelfServiceOff = escrow.Errorf(escrow.CodeNotFound, "Self-service is turned off. Ask your IT helpdesk for your recovery key.")

// selfServiceOn reports whether self-service is on; off, the pages are not there.
func (s *Server) selfServiceOn(r *http.Request) (bool, error) {
	set, err := s.store.Settings(r.Context())
	return set.SelfServiceEnabled, err
}

// selfShow serves GET /my: the person's own devices, the form to get a recovery key by the key
// ID on the recovery screen or by device, and when a recovery key is needed.
func (s *Server) selfShow(w http.ResponseWriter, r *http.Request) error {
	markAuthorized(r) // every signed-in person may see their own devices
	on, err := s.selfServiceOn(r)
	if err != nil {
		return err
	}
	if !on {
		return errSelfServiceOff
	}
	return s.renderSelf(w, r, http.StatusOK, &selfData{})
}

func (s *Server) renderSelf(w http.ResponseWriter, r *http.Request, status int, d *selfData) error {
	p := principal(r)
	devices, _, err := s.store.ListDevices(r.Context(), escrow.DeviceFilter{Scope: ownScope(p), Limit: 100})
	if err != nil {
		return err
	}
	d.Devices, d.Reasons = devices, standardReasons
	if d.DeviceID == "" && len(devices) == 1 {
		d.DeviceID = devices[0].ID
	}
	return s.render(w, r, status, viewSelf, "My recovery key", "my", d)
}
