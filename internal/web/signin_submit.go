package web

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/password"
)

// maxFormBytes bounds every form body; the largest real form is a few hundred bytes.
const maxFormBytes = 64 << 10

// signinSubmit serves POST /signin: a local account's email and password. Failures are limited
// per account from one address and per client address (in the database, so every server
// counts together), and the password checks running at once are bounded (s.passwords); every
// success and failure is audited, never with the password, and of the refusals over a limit
// only the first of a window from an address.
func (s *Server) signinSubmit(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return escrow.Errorf(escrow.CodeInvalid, "The form could not be read.")
	}
	email := strings.TrimSpace(r.PostForm.Get("email"))
	pw := r.PostForm.Get("password")
	next := localPath(r.PostForm.Get("next"))
	d := &signinData{Email: email, Next: next, SSO: s.sso != nil}
	if email == "" || pw == "" || len(email) > 256 {
		d.Error = "Enter your email address and your password."
		return s.render(w, r, http.StatusBadRequest, viewSignIn, "Sign in", "", d)
	}
	if err := escrow.CheckText("email", email, true, 256); err != nil {
		d.Email = ""
		d.Error = "Enter your email address and your password."
		return s.render(w, r, http.StatusBadRequest, viewSignIn, "Sign in", "", d)
	}
	// What was typed goes into the audit trail only if it looks like a sign-in name: people do
	// type their password into the email field.
	typed := ""
	if strings.Contains(email, "@") && !strings.ContainsAny(email, " \t") {
		typed = email
	}
	o := origin(r, escrow.Principal{Actor: escrow.Actor{Type: escrow.ActorUser, Name: typed}})
	set, err := s.store.Settings(r.Context())
	if err != nil {
		return err
	}
	// Failures are counted, per account from one address and per address: an attacker failing
	// from their address never locks the account's owner out, who signs in from another. The
	// account's bucket is named by a hash of the name and the address, as people do type
	// their password into the email field.
	ip := clientIP(r)
	name, nerr := escrow.CanonicalName("email", email)
	if nerr != nil {
		name = email // no such account can exist; its attempts still count
	}
	account := sha256.Sum256([]byte(name + "|" + ip))
	buckets := []bucket{{"signin:account:" + hex.EncodeToString(account[:16]), set.SignInLimit.PerPerson},
		{"signin:address:" + ip, set.SignInLimit.PerAddress}}
	denied := func(detail string) error { return s.store.SignInDenied(r.Context(), o, detail) }
	if err := s.attempt(r, "sign-in", set.SignInLimit.Window, denied, buckets...); err != nil {
		return err
	}

	u, hash, err := s.store.UserCredentials(r.Context(), email)
	if err != nil && escrow.ErrorCode(err) != escrow.CodeNotFound {
		return err
	}
	var checkErr error
	switch {
	case err != nil || hash == "" || u.Disabled() || len(pw) > 1024:
		// A disabled account gets the same answer, in the same time, as a wrong password.
		// Spend the time a real check takes, so the answer does not tell which accounts exist.
		if checkErr = s.passwords.Verify(r.Context(), pw, s.equaliserHash()); checkErr == nil {
			checkErr = password.ErrMismatch
		}
	default:
		checkErr = s.passwords.Verify(r.Context(), pw, hash)
	}
	switch {
	case errors.Is(checkErr, password.ErrBusy):
		// Not a failure: the password was never checked.
		s.forgive(r, buckets...)
		return &limitedError{wait: busyWait}
	case errors.Is(checkErr, context.Canceled), errors.Is(checkErr, context.DeadlineExceeded):
		s.forgive(r, buckets...)
		return escrow.Wrap(escrow.CodeUnavailable, checkErr, "the request was cancelled")
	}
	ok := checkErr == nil
	if !ok {
		detail := "wrong email or password"
		if u.Disabled() {
			detail = "the account is disabled"
		}
		if u.ID != "" {
			o.Actor.ID, o.Actor.Name = u.ID, u.Email
		}
		if err := s.store.SignInDenied(r.Context(), o, detail); err != nil {
			return err
		}
		d.Error = "The email address or the password is wrong."
		return s.render(w, r, http.StatusUnauthorized, viewSignIn, "Sign in", "", d)
	}
	s.forgive(r, buckets...)
	p := escrow.Principal{Actor: escrow.Actor{Type: escrow.ActorUser, ID: u.ID, Name: u.Email}, Role: u.Role, Email: u.Email}
	return s.startSession(w, r, p, "password", next)
}

// startSession signs the principal in: a new session (never one the browser brought along),
// its cookie, and the way on.
func (s *Server) startSession(w http.ResponseWriter, r *http.Request, p escrow.Principal, method, next string) error {
	tok, hash, err := newToken()
	if err != nil {
		return err
	}
	o := origin(r, p)
	if p.Role == escrow.RoleUser {
		o.Source = escrow.SourceSelfService
	}
	if err := s.store.StartSession(r.Context(), o, p.Actor.ID, hash, method, s.cfg.SessionMaxAge); err != nil {
		return err
	}
	s.setCookie(w, r, sessionCookie, tok, "/", 0)
	if next == "" {
		next = homeFor(p)
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
	return nil
}

// equaliserHash is a hash of a password nobody has, computed once.
func (s *Server) equaliserHash() string {
	s.timingOnce.Do(func() {
		tok, _, err := newToken()
		if err == nil {
			s.timingHash, _ = password.Hash(tok)
		}
	})
	return s.timingHash
}
