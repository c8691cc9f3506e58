package web

import (
	"net/http"
	"net/url"
)

// route is one page or form target: its ServeMux pattern and its handler.
type route struct {
	pattern string
	handler http.Handler
}

// routes is the portal's route table. Every route names its method; "public" routes need no
// session, "signedIn" routes need one and their handler must authorize. The JSON API has its
// own table (internal/api) and its own handler: Mount joins the two.
func (s *Server) routes() []route {
	return []route{
		{"GET /static/{file}", s.public(s.staticServe)},

		{"GET /signin", s.public(s.signinShow)},
		{"POST /signin", s.public(s.signinSubmit)},
		{"GET /signin/sso", s.public(s.ssoStart)},
		{"GET /signin/sso/callback", s.public(s.ssoCallback)},
		{"POST /signout", s.signedIn(s.signoutSubmit)},
		{"GET /setup", s.public(s.setupShow)},
		{"POST /setup", s.public(s.setupSubmit)},
		{"POST /setup/sso", s.public(s.setupSSO)},

		{"GET /{$}", s.signedIn(s.homeShow)},
		{"GET /devices", s.signedIn(s.deviceList)},
		{"GET /devices/{deviceId}", s.signedIn(s.deviceShow)},
		{"GET /devices/{deviceId}/security", s.signedIn(s.deviceSecurity)},
		{"POST /devices/{deviceId}/keys", s.signedIn(s.keyView)},
		{"GET /devices/{deviceId}/rotate", s.signedIn(s.rotationConfirm)},
		{"POST /devices/{deviceId}/rotate", s.signedIn(s.rotationSubmit)},
		{"GET /devices/{deviceId}/retire", s.signedIn(s.retireConfirm)},
		{"POST /devices/{deviceId}/retire", s.signedIn(s.retireSubmit)},
		{"POST /devices/{deviceId}/update", s.signedIn(s.deviceUpdate)},
		{"POST /devices/{deviceId}/dispute", s.signedIn(s.deviceDispute)},

		{"GET /approvals", s.signedIn(s.approvalList)},
		{"POST /approvals/{id}/approve", s.signedIn(s.approvalApprove)},
		{"POST /approvals/{id}/deny", s.signedIn(s.approvalDeny)},

		{"GET /audit", s.signedIn(s.auditList)},
		{"GET /audit/export.csv", s.signedIn(s.auditExport)},
		{"GET /reports/escrow", s.signedIn(s.reportShow)},
		{"GET /reports/escrow.csv", s.signedIn(s.reportExport)},

		{"GET /settings", s.signedIn(s.settingsShow)},
		{"POST /settings", s.signedIn(s.settingsSave)},
		{"POST /settings/incident", s.signedIn(s.settingsIncident)},
		{"GET /users", s.signedIn(s.userList)},
		{"POST /users", s.signedIn(s.userCreate)},
		{"POST /users/{userId}/role", s.signedIn(s.userRole)},
		{"POST /users/{userId}/access", s.signedIn(s.userAccess)},
		{"GET /tokens", s.signedIn(s.tokenList)},
		{"POST /tokens/api", s.signedIn(s.apiTokenCreate)},
		{"POST /tokens/enrollment", s.signedIn(s.enrollmentTokenCreate)},
		{"POST /tokens/api/{tokenId}/revoke", s.signedIn(s.apiTokenRevoke)},
		{"POST /tokens/enrollment/{tokenId}/revoke", s.signedIn(s.enrollmentTokenRevoke)},

		{"GET /my", s.signedIn(s.selfShow)},
		{"POST /my/key", s.signedIn(s.selfKey)},
	}
}

// Handler returns the portal's handler: the route table behind cross-origin protection and
// the security headers every answer carries.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, r := range append(s.routes(), route{"/", s.public(s.notFound)}) {
		h := r.handler
		if s.metrics != nil {
			h = s.metrics.Instrument(r.pattern, h)
		}
		mux.Handle(r.pattern, h)
	}
	// Every POST must come from a page of this origin (Sec-Fetch-Site, else Origin against
	// Host). Together with SameSite cookies this keeps another site from making a signed-in
	// browser view keys, rotate them or change settings.
	cop := http.NewCrossOriginProtection()
	if u, err := url.Parse(s.cfg.PublicURL); err == nil && u.Host != "" {
		// Behind a proxy that rewrites Host, the portal's own origin is still its own. Checked
		// by New, so this cannot fail.
		_ = cop.AddTrustedOrigin(u.Scheme + "://" + u.Host)
	}
	cop.SetDenyHandler(http.HandlerFunc(s.crossOriginDenied))
	return s.securityHeaders(cop.Handler(mux))
}
