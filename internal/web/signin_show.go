package web

import (
	"net/http"
)

type signinData struct {
	layout
	Email string
	Next  string
	SSO   bool
	Error string
	// NoAdmin is set while the installation has no admin: the page says where the setup link is.
	NoAdmin bool
}

// notices are the confirmations a redirect may ask a page to show. Only these fixed texts can
// appear: a notice is a code in the URL, never text from it.
var notices = map[string]string{
	"signed-out":               "You are signed out.",
	"rotation-requested":       "Rotation requested. The device will replace its recovery password the next time it checks in.",
	"settings-saved":           "Settings saved.",
	"incident-started":         "Incident mode is on: self-service has no per-address limit until the time shown.",
	"incident-stopped":         "Incident mode is off.",
	"user-created":             "User added.",
	"role-changed":             "Role changed.",
	"user-disabled":            "User disabled: their sessions have ended, and their sign-ins and API tokens are refused until they are enabled.",
	"user-enabled":             "User enabled.",
	"device-retired":           "Device retired: its token is refused, and its recovery keys are kept for the retention period, then purged.",
	"device-updated":           "Owner and tags saved.",
	"device-disputed":          "Device marked disputed: self-service no longer offers it or its recovery keys.",
	"dispute-cleared":          "Dispute cleared: the device's owner can use self-service for it again.",
	"api-token-revoked":        "API token revoked: it is refused from the next request on.",
	"enrollment-token-revoked": "Enrollment token revoked: no device can enroll with it any more. Devices already enrolled keep working.",
	"approval-approved":        "Request approved: the requester can now view the device's recovery key once, before the approval expires.",
	"approval-denied":          "Request denied: nothing was disclosed.",
}

func notice(r *http.Request) string { return notices[r.URL.Query().Get("notice")] }

// signinShow serves GET /signin: the sign-in form, and the single sign-on button when it is on.
// A browser that is already signed in goes on to its home page.
func (s *Server) signinShow(w http.ResponseWriter, r *http.Request) error {
	next := localPath(r.URL.Query().Get("next"))
	if p, _, err := s.session(r); err == nil {
		if next == "" {
			next = homeFor(p)
		}
		http.Redirect(w, r, next, http.StatusSeeOther)
		return nil
	}
	d := &signinData{Next: next, SSO: s.sso != nil}
	d.Notice = notice(r)
	var err error
	if d.NoAdmin, err = s.store.NeedsSetup(r.Context()); err != nil {
		return err
	}
	return s.render(w, r, http.StatusOK, viewSignIn, "Sign in", "", d)
}
