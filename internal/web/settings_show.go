package web

import (
	"net/http"

	"github.com/keyward/keyward/internal/escrow"
)

// settingsForm is the settings as the form shows them: flags, and durations in the API's
// form (7d, 36h, 0).
type settingsForm struct {
	SelfServiceEnabled     bool
	AutoRotateOnDisclosure bool
	RetentionPeriod        string
	EscrowGracePeriod      string
	RotationTimeout        string
	MaxKeyAge              string
}

func newSettingsForm(s escrow.Settings) settingsForm {
	return settingsForm{
		SelfServiceEnabled:     s.SelfServiceEnabled,
		AutoRotateOnDisclosure: s.AutoRotateOnDisclosure,
		RetentionPeriod:        s.Get("retentionPeriod"),
		EscrowGracePeriod:      s.Get("escrowGracePeriod"),
		RotationTimeout:        s.Get("rotationTimeout"),
		MaxKeyAge:              s.Get("maxKeyAge"),
	}
}

type settingsData struct {
	layout
	Form  settingsForm
	Error string
}

// settingsShow serves GET /settings (admins): self-service, automatic rotation, retention and
// the other run-time settings.
func (s *Server) settingsShow(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanAdminister(), escrow.ActionSettingsUpdate, ""); err != nil {
		return err
	}
	set, err := s.store.Settings(r.Context())
	if err != nil {
		return err
	}
	d := &settingsData{Form: newSettingsForm(set)}
	d.Notice = notice(r)
	return s.render(w, r, http.StatusOK, viewSettings, "Settings", "settings", d)
}
