package web

import (
	"errors"
	"net/http"
	"strings"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/password"
)

// userCreate serves POST /users (admins): a new person with a role, helpdesk scope tags, and a
// password for local sign-in (or none, for single sign-on only).
func (s *Server) userCreate(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanAdminister(), escrow.ActionUserCreate, ""); err != nil {
		return err
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return escrow.Errorf(escrow.CodeInvalid, "The form could not be read.")
	}
	d := &usersData{Email: strings.TrimSpace(r.PostForm.Get("email")), Role: r.PostForm.Get("role"), Tags: r.PostForm.Get("tags")}
	nu := escrow.NewUser{Email: d.Email, Role: escrow.Role(d.Role), ScopeTags: formTags(d.Tags)}
	var formErr error
	for _, t := range nu.ScopeTags {
		if formErr == nil {
			formErr = escrow.CheckText("tags", t, true, 64)
		}
	}
	if pw := r.PostForm.Get("password"); pw != "" && formErr == nil {
		h, err := s.passwords.Hash(r.Context(), pw)
		if errors.Is(err, password.ErrBusy) {
			return &limitedError{wait: busyWait}
		}
		if err != nil {
			formErr = escrow.Errorf(escrow.CodeInvalid, "The password must be %d to 1024 characters long.", password.MinLength)
		}
		nu.PasswordHash = h
	}
	if formErr == nil {
		_, formErr = s.store.CreateUser(r.Context(), origin(r, p), nu)
	}
	if c := escrow.ErrorCode(formErr); formErr != nil && (c == escrow.CodeInvalid || c == escrow.CodeConflict) {
		d.Error = escrow.ErrorMessage(formErr)
		return s.renderUsers(w, r, statusOf[c], d)
	}
	if formErr != nil {
		return formErr
	}
	http.Redirect(w, r, "/users?notice=user-created", http.StatusSeeOther)
	return nil
}
