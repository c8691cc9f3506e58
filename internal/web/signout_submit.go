package web

import (
	"net/http"

	"github.com/keyward/keyward/internal/escrow"
)

// signoutSubmit serves POST /signout: the session is deleted on the server (a copied cookie
// is worthless from now on) and the sign-out audited.
func (s *Server) signoutSubmit(w http.ResponseWriter, r *http.Request) error {
	markAuthorized(r) // anyone signed in may sign out
	p := principal(r)
	o := origin(r, p)
	if p.Role == escrow.RoleUser {
		o.Source = escrow.SourceSelfService
	}
	if err := s.store.EndSession(r.Context(), o, sessionHash(r)); err != nil {
		return err
	}
	s.clearCookie(w, r, sessionCookie, "/")
	http.Redirect(w, r, "/signin?notice=signed-out", http.StatusSeeOther)
	return nil
}
