package web

import (
	"net/http"

	"github.com/keyward/keyward/internal/escrow"
)

// userAccess serves POST /users/{userId}/access (admins): disabled=true takes a person's access
// away (their sessions end, their sign-ins and API tokens are refused), disabled=false gives it
// back. Nobody can disable themself or the last enabled admin.
func (s *Server) userAccess(w http.ResponseWriter, r *http.Request) error {
	p, id, err := s.userForm(w, r, escrow.ActionUserDisable)
	if err != nil {
		return err
	}
	var disable bool
	switch r.PostForm.Get("disabled") {
	case "true":
		disable = true
	case "false":
	default:
		return escrow.Errorf(escrow.CodeInvalid, "The form could not be read.")
	}
	_, err = s.store.UpdateUser(r.Context(), origin(r, p), id, escrow.UserChange{Disabled: &disable})
	if c := escrow.ErrorCode(err); err != nil && c == escrow.CodeConflict {
		return s.renderUsers(w, r, statusOf[c], &usersData{Role: string(escrow.RoleUser), Error: escrow.ErrorMessage(err)})
	}
	if err != nil {
		return err
	}
	n := "user-enabled"
	if disable {
		n = "user-disabled"
	}
	http.Redirect(w, r, "/users?notice="+n, http.StatusSeeOther)
	return nil
}
