package web

import (
	"net/http"

	"github.com/keyward/keyward/internal/escrow"
)

type tokensData struct {
	layout
	Users            []escrow.User
	APITokens        []escrow.APIToken
	EnrollmentTokens []escrow.EnrollmentTokenInfo
	Error            string
}

// tokenList serves GET /tokens (admins): the API and enrollment tokens that exist, each with a
// Revoke button while it is in force, and the forms to create an API token for a person and an
// enrollment token for devices. Tokens are shown once, when created; only their hashes are kept,
// and this page shows neither.
func (s *Server) tokenList(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanAdminister(), escrow.ActionTokenCreate, ""); err != nil {
		return err
	}
	d := &tokensData{}
	d.Notice = notice(r)
	return s.renderTokens(w, r, http.StatusOK, d)
}

func (s *Server) renderTokens(w http.ResponseWriter, r *http.Request, status int, d *tokensData) error {
	ctx := r.Context()
	users, err := s.store.ListUsers(ctx)
	if err != nil {
		return err
	}
	if d.APITokens, err = s.store.ListAPITokens(ctx, ""); err != nil {
		return err
	}
	if d.EnrollmentTokens, err = s.store.ListEnrollmentTokens(ctx); err != nil {
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

// revokeToken is the revoke form of either kind of token: admins only, the store revokes and
// audits, and the browser goes back to /tokens with the notice. A token already revoked shows
// the page again with the store's message; an unknown ID is a 404.
func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request, action, noticeCode string, revoke func(o escrow.Origin, id string) error) error {
	p := principal(r)
	if err := s.authorize(r, p.CanAdminister(), action, ""); err != nil {
		return err
	}
	err := revoke(origin(r, p), r.PathValue("tokenId"))
	if c := escrow.ErrorCode(err); err != nil && c == escrow.CodeConflict {
		return s.renderTokens(w, r, statusOf[c], &tokensData{Error: escrow.ErrorMessage(err)})
	}
	if err != nil {
		return err
	}
	http.Redirect(w, r, "/tokens?notice="+noticeCode, http.StatusSeeOther)
	return nil
}
