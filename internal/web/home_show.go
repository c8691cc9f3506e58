package web

import "net/http"

// homeShow serves GET /: staff go to the device list, everyone else to self-service.
func (s *Server) homeShow(w http.ResponseWriter, r *http.Request) error {
	markAuthorized(r) // a redirect to a page that checks for itself
	http.Redirect(w, r, homeFor(principal(r)), http.StatusSeeOther)
	return nil
}
