package web

import (
	"net/http"
	"strings"

	"github.com/google/uuid"
	"github.com/keyward/keyward/internal/escrow"
)

type selfKeyData struct {
	layout
	Device     escrow.DeviceDetail
	Keys       []escrow.DisclosedKey
	KeyID      string          // the key ID the person typed, canonical
	Matches    map[string]bool // key IDs that start with it
	Candidates []escrow.RecoveryKey
	AutoRotate bool
}

// notMine is the one answer for a key ID or device that is not the person's, whether it
// belongs to someone else or does not exist: the page must not tell which (no existence
// oracle for key IDs or device IDs).
var notMine = escrow.Errorf(escrow.CodeNotFound, "No recovery key with this key ID was found among your devices. Check the key ID on the recovery screen, or pick your device from the list.")

// selfKey serves POST /my/key: a person gets the recovery key of their own device, found by
// the key ID on the recovery screen (its first 8 characters are enough) or by the device they
// picked, with a reason. Attempts are limited per person and per address; every view is a
// key.read with source self_service, in the disclosure's transaction.
func (s *Server) selfKey(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	markAuthorized(r) // whether the device is theirs is decided in the disclosure's transaction
	set, err := s.store.Settings(r.Context())
	if err != nil {
		return err
	}
	if !set.SelfServiceEnabled {
		return errSelfServiceOff
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return escrow.Errorf(escrow.CodeInvalid, "The form could not be read.")
	}
	form := &selfData{KeyID: strings.TrimSpace(r.PostForm.Get("keyId")), DeviceID: r.PostForm.Get("deviceId"),
		Reason: r.PostForm.Get("reason"), Details: r.PostForm.Get("details")}
	reasonText, err := formReason(r)
	if err == nil && form.KeyID == "" && form.DeviceID == "" {
		err = escrow.Errorf(escrow.CodeInvalid, "Enter the key ID shown on the recovery screen, or pick your device.")
	}
	var keyPrefix string
	if err == nil && form.KeyID != "" {
		if keyPrefix, err = escrow.ParseKeyIDPrefix(form.KeyID); err != nil {
			err = escrow.Errorf(escrow.CodeInvalid, "The key ID has 8 or more characters from the recovery screen, like 3F2A9C1B (letters A-F and digits only).")
		}
	}
	if err != nil {
		form.Error = escrow.ErrorMessage(err)
		return s.renderSelf(w, r, http.StatusBadRequest, form)
	}

	o := origin(r, p)
	denied := func(detail string) error {
		e := o.Event(escrow.ActionKeyRead, escrow.OutcomeDenied)
		e.Detail = detail
		return s.store.Record(r.Context(), e)
	}
	// Every attempt counts, per person and per address. In incident mode (a mass-recovery day,
	// a whole office behind one address) the per-address limit is lifted; the per-person one
	// stays.
	lim := set.SelfServiceLimit
	perAddress := lim.PerAddress
	if set.IncidentOn(s.cfg.Now()) {
		perAddress = 0
	}
	if err := s.attempt(r, "self-service", lim.Window, denied, bucket{"disclose:user:" + strings.ToLower(p.Actor.ID), lim.PerPerson},
		bucket{"disclose:address:" + clientIP(r), perAddress}); err != nil {
		return err
	}

	d := &selfKeyData{KeyID: keyPrefix}
	deviceID := ""
	if keyPrefix != "" {
		// Only the person's own devices are searched, so another person's key ID and a key ID
		// that does not exist look exactly alike from here on.
		keys, _, err := s.store.ListKeys(r.Context(), o, escrow.KeyFilter{Scope: ownScope(p), KeyIDPrefix: keyPrefix, Limit: 20})
		if err != nil {
			return err
		}
		devices := map[string]bool{}
		for _, k := range keys {
			devices[k.DeviceID] = true
			deviceID = k.DeviceID
		}
		switch {
		case len(devices) == 0:
			return s.selfNotFound(r, o, "no key with ID "+keyPrefix+" among the person's devices")
		case len(devices) > 1:
			d.Candidates = keys
			return s.render(w, r, http.StatusOK, viewSelfKey, "Which key?", "my", d)
		}
	} else {
		id, err := uuid.Parse(form.DeviceID)
		if err != nil {
			return s.selfNotFound(r, o, "not a device ID")
		}
		deviceID = id.String()
	}
	disclosure, err := s.store.Disclose(r.Context(), o, deviceID, escrow.Access{Reason: reasonText, Role: escrow.RoleUser}, func(dev escrow.Device, set escrow.Settings) bool {
		return set.SelfServiceEnabled && ownScope(p).Allows(dev)
	})
	if c := escrow.ErrorCode(err); c == escrow.CodeNotFound || c == escrow.CodeForbidden {
		// The store has recorded the denied key.read; the answer is the same for both.
		return notMine
	}
	if err != nil {
		return err
	}
	if len(disclosure.Keys) == 0 {
		return escrow.Errorf(escrow.CodeNotFound, "Keyward holds no recovery key for this device yet. Ask your IT helpdesk.")
	}
	d.Device, d.Keys = disclosure.Device, disclosure.Keys
	if keyPrefix != "" {
		// The key asked for first, then any other the device holds.
		var first, rest []escrow.DisclosedKey
		d.Matches = map[string]bool{}
		for _, k := range d.Keys {
			if strings.HasPrefix(k.KeyID, keyPrefix) {
				d.Matches[k.KeyID] = true
				first = append(first, k)
			} else {
				rest = append(rest, k)
			}
		}
		d.Keys = append(first, rest...)
	}
	d.AutoRotate = set.AutoRotateOnDisclosure
	return s.render(w, r, http.StatusOK, viewSelfKey, "Your recovery key", "my", d)
}

// selfNotFound records a self-service lookup that found nothing of the person's as a denied
// key.read, and answers with notMine.
func (s *Server) selfNotFound(r *http.Request, o escrow.Origin, detail string) error {
	e := o.Event(escrow.ActionKeyRead, escrow.OutcomeDenied)
	e.Detail = detail
	if err := s.store.Record(r.Context(), e); err != nil {
		return err
	}
	return notMine
}
