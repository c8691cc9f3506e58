package web

import (
	"net/http"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// settingsForm is the settings as the form shows them: flags, and every other setting in the
// API's form (7d, 36h, 0, 100), by name.
type settingsForm struct {
	SelfServiceEnabled     bool
	AutoRotateOnDisclosure bool
	Flags                  map[string]bool // the other checkboxes, by name
	Values                 map[string]string
}

// formSettings are the settings the main form edits as text; incident mode has its own form.
var formSettings = []string{"retentionPeriod", "escrowGracePeriod", "rotationTimeout", "maxKeyAge",
	"signInLimitPerAccount", "signInLimitPerAddress", "signInLimitWindow",
	"selfServiceLimitPerPerson", "selfServiceLimitPerAddress", "selfServiceLimitWindow",
	"enrollmentLimitPerAddress", "enrollmentLimitWindow", "ticketPattern", "approvalTTL"}

// formFlags are the checkboxes of the main form beside the two of SPEC §8.
var formFlags = []string{"ticketRequired", "approvalRequired", "approvalForAdmins"}

func newSettingsForm(s escrow.Settings) settingsForm {
	f := settingsForm{SelfServiceEnabled: s.SelfServiceEnabled, AutoRotateOnDisclosure: s.AutoRotateOnDisclosure,
		Flags: map[string]bool{}, Values: map[string]string{}}
	for _, name := range formFlags {
		f.Flags[name] = s.Get(name) == "true"
	}
	for _, name := range formSettings {
		f.Values[name] = s.Get(name)
	}
	return f
}

type settingsData struct {
	layout
	Form  settingsForm
	Error string
	// Incident mode: on until IncidentUntil (zero: off), and the length the form offers.
	IncidentUntil time.Time
	IncidentFor   string
}

func newSettingsData(s escrow.Settings, now time.Time) *settingsData {
	d := &settingsData{Form: newSettingsForm(s), IncidentFor: "6h"}
	if s.IncidentOn(now) {
		d.IncidentUntil = s.IncidentModeUntil
	}
	return d
}

// settingsShow serves GET /settings (admins): self-service, automatic rotation, retention, the
// abuse limits, incident mode and the other run-time settings.
func (s *Server) settingsShow(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanAdminister(), escrow.ActionSettingsUpdate, ""); err != nil {
		return err
	}
	set, err := s.store.Settings(r.Context())
	if err != nil {
		return err
	}
	d := newSettingsData(set, s.cfg.Now())
	d.Notice = notice(r)
	return s.render(w, r, http.StatusOK, viewSettings, "Settings", "settings", d)
}
