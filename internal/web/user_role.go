package web

import (
	"net/http"

	"github.com/google/uuid"
	"github.com/keyward/keyward/internal/escrow"
)

// userRole serves POST /users/{userId}/role (admins): a new role, and the tags that limit a
// helpdesk person to some devices. It applies at the person's next request: sessions read the
// role from the users table every time.
func (s *Server) userRole(w http.ResponseWriter, r *http.Request) error {
	p, id, err := s.userForm(w, r, escrow.ActionUserRole)
	if err != nil {
		return err
	}
	_, err = s.store.SetUserRole(r.Context(), origin(r, p), id, escrow.Role(r.PostForm.Get("role")), formTags(r.PostForm.Get("tags")))
	if c := escrow.ErrorCode(err); err != nil && (c == escrow.CodeInvalid || c == escrow.CodeConflict) {
		return s.renderUsers(w, r, statusOf[c], &usersData{Role: string(escrow.RoleUser), Error: escrow.ErrorMessage(err)})
	}
	if err != nil {
		return err
	}
	http.Redirect(w, r, "/users?notice=role-changed", http.StatusSeeOther)
	return nil
}

// userForm starts a change to the user in the path (admins): it authorizes the change as
// action, and reads the user's ID and the posted form.
func (s *Server) userForm(w http.ResponseWriter, r *http.Request, action string) (escrow.Principal, string, error) {
	p := principal(r)
	if err := s.authorize(r, p.CanAdminister(), action, ""); err != nil {
		return p, "", err
	}
	id, err := uuid.Parse(r.PathValue("userId"))
	if err != nil {
		return p, "", escrow.Errorf(escrow.CodeNotFound, "There is no such user.")
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return p, "", escrow.Errorf(escrow.CodeInvalid, "The form could not be read.")
	}
	return p, id.String(), nil
}
