package web

import (
	"net/http"
	"strings"

	"github.com/keyward/keyward/internal/escrow"
)

// apiTokenCreate serves POST /tokens/api (admins): an API token for a person, carrying their
// role, shown this once.
func (s *Server) apiTokenCreate(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanAdminister(), escrow.ActionTokenCreate, ""); err != nil {
		return err
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return escrow.Errorf(escrow.CodeInvalid, "The form could not be read.")
	}
	email, name := strings.TrimSpace(r.PostForm.Get("email")), strings.TrimSpace(r.PostForm.Get("name"))
	err := escrow.CheckText("name", name, false, 200)
	var tok escrow.Token
	if err == nil {
		tok, err = s.store.CreateAPIToken(r.Context(), origin(r, p), email, name)
	}
	if c := escrow.ErrorCode(err); err != nil && (c == escrow.CodeInvalid || c == escrow.CodeNotFound) {
		return s.renderTokens(w, r, http.StatusBadRequest, &tokensData{Error: escrow.ErrorMessage(err)})
	}
	if err != nil {
		return err
	}
	d := &tokenCreatedData{Kind: "API token", Token: tok.String(), Details: "For " + email + ", with their role."}
	return s.render(w, r, http.StatusCreated, viewTokenCreated, "API token created", "tokens", d)
}
