package web

import (
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/keyward/keyward/internal/escrow"
	"golang.org/x/oauth2"
)

// ssoCallback serves GET /signin/sso/callback, where the identity provider sends the browser
// back. The state must match the browser's cookie and a sign-in this installation started
// (once only); the code is exchanged with the PKCE verifier; the ID token's signature,
// issuer, audience, expiry and nonce are checked. Only then is the person found by (issuer,
// sub), or linked or created by a verified email (store.SSOUser), their role kept in step with
// the claims, and signed in. Every refusal is audited.
func (s *Server) ssoCallback(w http.ResponseWriter, r *http.Request) error {
	if s.sso == nil {
		return escrow.Errorf(escrow.CodeNotFound, "Single sign-on is not set up on this server.")
	}
	q := r.URL.Query()
	o := origin(r, escrow.Principal{})
	refuse := func(detail, message string) error {
		if err := s.store.SignInDenied(r.Context(), o, "single sign-on: "+detail); err != nil {
			return err
		}
		return escrow.Errorf(escrow.CodeUnauthorized, "%s", message)
	}
	if e := q.Get("error"); e != "" {
		return refuse("the identity provider answered "+cleanHeader(e, 64), "The identity provider did not sign you in. Please try again.")
	}
	state := q.Get("state")
	c, err := r.Cookie(ssoCookie)
	if state == "" || err != nil || subtle.ConstantTimeCompare([]byte(c.Value), []byte(state)) != 1 {
		return refuse("the state did not match this browser's sign-in", "This sign-in was not started in this browser, or has expired. Please start again.")
	}
	// Only now: a stray or forged callback must not end a sign-in the browser has in flight.
	s.clearCookie(w, r, ssoCookie, "/signin/sso")
	login, err := s.store.TakeSSOLogin(r.Context(), tokenHash(state))
	if escrow.ErrorCode(err) == escrow.CodeNotFound {
		return refuse("unknown, used or expired state", "This sign-in was not started here, was already used, or took too long. Please start again.")
	}
	if err != nil {
		return err
	}
	conf, idv, err := s.sso.provider(r.Context())
	if err != nil {
		return err
	}
	ctx := s.sso.context(r.Context())
	tok, err := conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(login.Verifier))
	if err != nil {
		s.log.Warn("single sign-on code exchange failed", "error", err.Error())
		return refuse("the code exchange failed", "The identity provider did not confirm the sign-in. Please try again.")
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return refuse("no ID token in the answer", "The identity provider did not confirm the sign-in. Please try again.")
	}
	idt, err := idv.Verify(ctx, raw)
	if err != nil {
		s.log.Warn("single sign-on ID token refused", "error", err.Error())
		return refuse("the ID token did not verify", "The identity provider's answer could not be verified. Please try again.")
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(login.Nonce)) != 1 {
		return refuse("the nonce did not match", "The identity provider's answer does not belong to this sign-in. Please start again.")
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return refuse("the ID token's claims did not parse", "The identity provider's answer could not be read.")
	}
	// The person is (issuer, sub). The email matters only at the first sign-on, and only when
	// the provider vouches for it: email_verified exactly true, never a missing claim or the
	// string "true" (a provider that omits it has not checked the address). No other claim
	// stands in for it: preferred_username is whatever the person typed at many providers.
	email := claimString(claims, "email")
	verified, _ := claims["email_verified"].(bool)
	o.Actor = escrow.Actor{Type: escrow.ActorUser, Name: cleanHeader(email, 256)}
	rawRole, claimed := claims[s.sso.cfg.RoleClaim]
	role := s.sso.cfg.roleFor(rawRole)
	if login.SetupHash != nil {
		// Started from a setup link: this identity becomes the first admin, whatever its
		// claims map to. The link is checked now, so that nobody is created from a dead one,
		// and consumed with the promotion.
		if err := s.store.CheckSetupLink(r.Context(), login.SetupHash); err != nil {
			return err
		}
		role, claimed = escrow.RoleUser, true
	}
	if claimed && role == "" {
		return refuse("no role for the claims", "Your account has no access to Keyward. Ask an administrator to add you to a group that has.")
	}
	u, err := s.store.SSOUser(r.Context(), o, escrow.SSOSignOn{Issuer: idt.Issuer, Subject: idt.Subject,
		Email: email, EmailVerified: verified, Role: role, RoleClaimed: claimed})
	if escrow.ErrorCode(err) == escrow.CodeInvalid {
		return refuse("unusable ID token: "+escrow.ErrorMessage(err), "Your identity provider gave a sign-in name Keyward cannot use.")
	}
	if err != nil {
		// Refusals (CodeUnauthorized) are recorded by the store with the reason.
		return err
	}
	next := localPath(login.ReturnTo)
	if login.SetupHash != nil {
		o.Actor.ID, o.Actor.Name = u.ID, u.Email
		if u, err = s.store.PromoteFirstAdmin(r.Context(), o, login.SetupHash, u.ID); err != nil {
			return err
		}
		next = "/devices"
	}
	p := escrow.Principal{Actor: escrow.Actor{Type: escrow.ActorUser, ID: u.ID, Name: u.Email}, Role: u.Role, Email: u.Email}
	return s.startSession(w, r, p, "sso", next)
}

func claimString(claims map[string]any, name string) string {
	v, _ := claims[name].(string)
	return strings.TrimSpace(v)
}
