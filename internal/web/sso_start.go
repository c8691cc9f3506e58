package web

import (
	"net/http"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/keyward/keyward/internal/escrow"
	"golang.org/x/oauth2"
)

// ssoCookie carries the state of a single sign-on in flight, binding the callback to the
// browser that started it: a callback URL sent to someone else (to sign them in as the sender)
// finds no matching cookie there.
const ssoCookie = "keyward_sso"

// ssoTTL is how long a person has at the identity provider before the sign-in must start over.
const ssoTTL = 10 * time.Minute

// ssoStart serves GET /signin/sso: it starts the authorization code flow with a fresh state,
// nonce and PKCE verifier, kept in the database so that any server can finish it, and sends
// the browser to the identity provider.
func (s *Server) ssoStart(w http.ResponseWriter, r *http.Request) error {
	if s.sso == nil {
		return escrow.Errorf(escrow.CodeNotFound, "Single sign-on is not set up on this server.")
	}
	o := origin(r, escrow.Principal{})
	// Each start writes a row, so every start counts, against the per-address sign-in limit.
	set, err := s.store.Settings(r.Context())
	if err != nil {
		return err
	}
	denied := func(detail string) error { return s.store.SignInDenied(r.Context(), o, detail) }
	lim := set.SignInLimit
	if err := s.attempt(r, "sign-in", lim.Window, denied, bucket{"sso:address:" + clientIP(r), lim.PerAddress}); err != nil {
		return err
	}
	return s.beginSSO(w, r, escrow.SSOLogin{ReturnTo: localPath(r.URL.Query().Get("next"))})
}

// beginSSO sends the browser to the identity provider with a fresh state, nonce and PKCE
// verifier, saved with what the callback needs to know of this sign-on (l's nonce and
// verifier are filled in here).
func (s *Server) beginSSO(w http.ResponseWriter, r *http.Request, l escrow.SSOLogin) error {
	conf, _, err := s.sso.provider(r.Context())
	if err != nil {
		return err
	}
	state, stateHash, err := newToken()
	if err != nil {
		return err
	}
	nonce, _, err := newToken()
	if err != nil {
		return err
	}
	l.Nonce, l.Verifier = nonce, oauth2.GenerateVerifier()
	if err := s.store.SaveSSOLogin(r.Context(), stateHash, l, ssoTTL); err != nil {
		return err
	}
	s.setCookie(w, r, ssoCookie, state, "/signin/sso", int(ssoTTL.Seconds()))
	http.Redirect(w, r, conf.AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(l.Verifier)), http.StatusSeeOther)
	return nil
}
