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
	p := principal(r)
	if err := s.authorize(r, p.CanAdminister(), escrow.ActionUserRole, ""); err != nil {
		return err
	}
	id, err := uuid.Parse(r.PathValue("userId"))
	if err != nil {
		return escrow.Errorf(escrow.CodeNotFound, "There is no such user.")
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return escrow.Errorf(escrow.CodeInvalid, "The form could not be read.")
	}
	_, err = s.store.SetUserRole(r.Context(), origin(r, p), id.String(), escrow.Role(r.PostForm.Get("role")), formTags(r.PostForm.Get("tags")))
	if c := escrow.ErrorCode(err); err != nil && (c == escrow.CodeInvalid || c == escrow.CodeConflict) {
		return s.renderUsers(w, r, statusOf[c], &usersData{Role: string(escrow.RoleUser), Error: escrow.ErrorMessage(err)})
	}
	if err != nil {
		return err
	}
	http.Redirect(w, r, "/users?notice=role-changed", http.StatusSeeOther)
	return nil
}
