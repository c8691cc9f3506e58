package web

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// settingsSave serves POST /settings (admins). Only the settings that changed are written, so
// the audit event names exactly what the admin changed; an invalid value changes nothing and
// the form comes back with the message.
func (s *Server) settingsSave(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanAdminister(), escrow.ActionSettingsUpdate, ""); err != nil {
		return err
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return escrow.Errorf(escrow.CodeInvalid, "The form could not be read.")
	}
	current, err := s.store.Settings(r.Context())
	if err != nil {
		return err
	}
	// An unticked checkbox sends nothing: absent means false.
	submitted := map[string]string{
		"selfServiceEnabled":     strconv.FormatBool(r.PostForm.Get("selfServiceEnabled") == "true"),
		"autoRotateOnDisclosure": strconv.FormatBool(r.PostForm.Get("autoRotateOnDisclosure") == "true"),
	}
	for _, name := range formFlags {
		submitted[name] = strconv.FormatBool(r.PostForm.Get(name) == "true")
	}
	for _, name := range formSettings {
		// A field the form did not send is left as it is.
		if _, sent := r.PostForm[name]; sent {
			submitted[name] = strings.TrimSpace(r.PostForm.Get(name))
		} else {
			submitted[name] = current.Get(name)
		}
	}
	change := map[string]string{}
	for name, v := range submitted {
		probe := current
		if err := probe.Set(name, v); err != nil || probe.Get(name) != current.Get(name) {
			change[name] = v
		}
	}
	if len(change) > 0 {
		if _, err := s.store.UpdateSettings(r.Context(), origin(r, p), change); err != nil {
			if escrow.ErrorCode(err) != escrow.CodeInvalid {
				return err
			}
			d := newSettingsData(current, s.cfg.Now())
			d.Form.SelfServiceEnabled = submitted["selfServiceEnabled"] == "true"
			d.Form.AutoRotateOnDisclosure = submitted["autoRotateOnDisclosure"] == "true"
			for _, name := range formFlags {
				d.Form.Flags[name] = submitted[name] == "true"
			}
			for _, name := range formSettings {
				d.Form.Values[name] = submitted[name]
			}
			d.Error = escrow.ErrorMessage(err)
			return s.render(w, r, http.StatusBadRequest, viewSettings, "Settings", "settings", d)
		}
	}
	http.Redirect(w, r, "/settings?notice=settings-saved", http.StatusSeeOther)
	return nil
}

// settingsIncident serves POST /settings/incident (admins): start incident mode for the
// length given (for=6h), or stop it (stop=1). The store records incident.start or
// incident.stop with the admin's name.
func (s *Server) settingsIncident(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanAdminister(), escrow.ActionSettingsUpdate, ""); err != nil {
		return err
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return escrow.Errorf(escrow.CodeInvalid, "The form could not be read.")
	}
	until, notice := "", "incident-stopped"
	if r.PostForm.Get("stop") == "" {
		d, err := escrow.ParseDuration(r.PostForm.Get("for"))
		if err != nil || d < time.Minute || d > escrow.MaxIncident {
			current, serr := s.store.Settings(r.Context())
			if serr != nil {
				return serr
			}
			data := newSettingsData(current, s.cfg.Now())
			data.IncidentFor = r.PostForm.Get("for")
			data.Error = "Incident mode: give how long it lasts, from 1m to " + escrow.FormatDuration(escrow.MaxIncident) + ", like 6h."
			return s.render(w, r, http.StatusBadRequest, viewSettings, "Settings", "settings", data)
		}
		until, notice = s.cfg.Now().Add(d).UTC().Format(time.RFC3339), "incident-started"
	}
	if _, err := s.store.UpdateSettings(r.Context(), origin(r, p), map[string]string{"incidentModeUntil": until}); err != nil {
		return err
	}
	http.Redirect(w, r, "/settings?notice="+notice, http.StatusSeeOther)
	return nil
}
