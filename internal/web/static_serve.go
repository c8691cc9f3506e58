package web

import (
	"net/http"

	"github.com/keyward/keyward/internal/escrow"
)

// staticServe serves GET /static/{file}: a stylesheet, the Copy button's script or the icon,
// by its hashed name. The content behind a name never changes, so it may be cached for a year.
func (s *Server) staticServe(w http.ResponseWriter, r *http.Request) error {
	a, ok := s.assets.byURL[r.PathValue("file")]
	if !ok {
		return escrow.Errorf(escrow.CodeNotFound, "There is no such file.")
	}
	w.Header().Set("Content-Type", a.contentType)
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	_, err := w.Write(a.body)
	if err != nil {
		return errAborted
	}
	return nil
}
