package web

import (
	"net/http"
	"strconv"
	"strings"

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
	for _, name := range []string{"retentionPeriod", "escrowGracePeriod", "rotationTimeout", "maxKeyAge"} {
		submitted[name] = strings.TrimSpace(r.PostForm.Get(name))
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
			form := newSettingsForm(current)
			form.SelfServiceEnabled = submitted["selfServiceEnabled"] == "true"
			form.AutoRotateOnDisclosure = submitted["autoRotateOnDisclosure"] == "true"
			form.RetentionPeriod, form.EscrowGracePeriod = submitted["retentionPeriod"], submitted["escrowGracePeriod"]
			form.RotationTimeout, form.MaxKeyAge = submitted["rotationTimeout"], submitted["maxKeyAge"]
			d := &settingsData{Form: form, Error: escrow.ErrorMessage(err)}
			return s.render(w, r, http.StatusBadRequest, viewSettings, "Settings", "settings", d)
		}
	}
	http.Redirect(w, r, "/settings?notice=settings-saved", http.StatusSeeOther)
	return nil
}
