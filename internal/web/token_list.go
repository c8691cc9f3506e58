package web

import (
	"net/http"

	"github.com/keyward/keyward/internal/escrow"
)

type tokensData struct {
	layout
	Users []escrow.User
	Error string
}

// tokenList serves GET /tokens (admins): the forms to create an API token for a person and an
// enrollment token for devices. Tokens are shown once, when created; only their hashes are kept.
func (s *Server) tokenList(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanAdminister(), escrow.ActionTokenCreate, ""); err != nil {
		return err
	}
	return s.renderTokens(w, r, http.StatusOK, &tokensData{})
}

func (s *Server) renderTokens(w http.ResponseWriter, r *http.Request, status int, d *tokensData) error {
	users, err := s.store.ListUsers(r.Context())
	if err != nil {
		return err
	}
	d.Users = users
	return s.render(w, r, status, viewTokens, "Tokens", "tokens", d)
}

type tokenCreatedData struct {
	layout
	Kind    string
	Token   string
	Details string
}
