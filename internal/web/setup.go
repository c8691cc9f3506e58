package web

import (
	"errors"
	"net/http"
	"strings"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/password"
)

// The first admin. `keyward serve` on a store with no admin prints a one-time setup link
// (/setup?token=…; the store keeps only the token's hash, and the link works once, for an hour,
// while no admin exists). These pages turn it into the first admin: a local account with a
// password, or the identity that signs on through the configured provider.

type setupData struct {
	layout
	Token string // the link's token, carried in the form; "" when the link does not work
	Email string
	SSO   bool
	Error string
}

// setupShow serves GET /setup?token=…: the form that creates the first admin, or a page that
// says the link does not work and how to get a new one.
func (s *Server) setupShow(w http.ResponseWriter, r *http.Request) error {
	token := r.URL.Query().Get("token")
	d := &setupData{SSO: s.sso != nil}
	if err := s.checkSetup(r, token); err != nil {
		if escrow.ErrorCode(err) != escrow.CodeNotFound {
			return err
		}
		d.Error = escrow.ErrorMessage(err)
		return s.render(w, r, http.StatusNotFound, viewSetup, "Set up Keyward", "", d)
	}
	d.Token = token
	return s.render(w, r, http.StatusOK, viewSetup, "Set up Keyward", "", d)
}

// checkSetup checks a setup link's token without using it up. Errors: CodeNotFound.
func (s *Server) checkSetup(r *http.Request, token string) error {
	if token == "" || len(token) > 128 {
		return s.store.CheckSetupLink(r.Context(), nil) // the store's own message
	}
	return s.store.CheckSetupLink(r.Context(), tokenHash(token))
}

// setupSubmit serves POST /setup: it creates the first admin with a password and signs them in.
func (s *Server) setupSubmit(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return escrow.Errorf(escrow.CodeInvalid, "The form could not be read.")
	}
	token := r.PostForm.Get("token")
	d := &setupData{Token: token, Email: strings.TrimSpace(r.PostForm.Get("email")), SSO: s.sso != nil}
	if err := s.checkSetup(r, token); err != nil {
		if escrow.ErrorCode(err) != escrow.CodeNotFound {
			return err
		}
		d.Token, d.Error = "", escrow.ErrorMessage(err)
		return s.render(w, r, http.StatusNotFound, viewSetup, "Set up Keyward", "", d)
	}
	pw := r.PostForm.Get("password")
	var formErr error
	if pw != r.PostForm.Get("password2") {
		formErr = escrow.Errorf(escrow.CodeInvalid, "The two passwords are not the same.")
	}
	var hash string
	if formErr == nil {
		var err error
		hash, err = s.passwords.Hash(r.Context(), pw)
		if errors.Is(err, password.ErrBusy) {
			return &limitedError{wait: busyWait}
		}
		if err != nil {
			formErr = escrow.Errorf(escrow.CodeInvalid, "The password must be %d to 1024 characters long.", password.MinLength)
		}
	}
	var u escrow.User
	if formErr == nil {
		u, formErr = s.store.CompleteSetup(r.Context(), origin(r, escrow.Principal{}), tokenHash(token), escrow.NewUser{Email: d.Email, PasswordHash: hash})
	}
	switch c := escrow.ErrorCode(formErr); {
	case formErr == nil:
	case c == escrow.CodeInvalid || c == escrow.CodeConflict:
		d.Error = escrow.ErrorMessage(formErr)
		return s.render(w, r, statusOf[c], viewSetup, "Set up Keyward", "", d)
	case c == escrow.CodeNotFound:
		d.Token, d.Error = "", escrow.ErrorMessage(formErr)
		return s.render(w, r, http.StatusNotFound, viewSetup, "Set up Keyward", "", d)
	default:
		return formErr
	}
	p := escrow.Principal{Actor: escrow.Actor{Type: escrow.ActorUser, ID: u.ID, Name: u.Email}, Role: u.Role, Email: u.Email}
	return s.startSession(w, r, p, "password", "/devices")
}

// setupSSO serves POST /setup/sso: the first admin is whoever signs on through the identity
// provider from this setup link (checked again, and used up, at the callback).
func (s *Server) setupSSO(w http.ResponseWriter, r *http.Request) error {
	if s.sso == nil {
		return escrow.Errorf(escrow.CodeNotFound, "Single sign-on is not set up on this server.")
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return escrow.Errorf(escrow.CodeInvalid, "The form could not be read.")
	}
	token := r.PostForm.Get("token")
	if err := s.checkSetup(r, token); err != nil {
		if escrow.ErrorCode(err) != escrow.CodeNotFound {
			return err
		}
		return s.render(w, r, http.StatusNotFound, viewSetup, "Set up Keyward", "", &setupData{Error: escrow.ErrorMessage(err)})
	}
	return s.beginSSO(w, r, escrow.SSOLogin{SetupHash: tokenHash(token)})
}
