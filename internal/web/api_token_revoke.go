package web

import (
	"net/http"

	"github.com/keyward/keyward/internal/escrow"
)

// apiTokenRevoke serves POST /tokens/api/{tokenId}/revoke (admins): the token is refused from
// the next request on, on every server.
func (s *Server) apiTokenRevoke(w http.ResponseWriter, r *http.Request) error {
	return s.revokeToken(w, r, escrow.ActionTokenRevoke, "api-token-revoked", func(o escrow.Origin, id string) error {
		return s.store.RevokeAPIToken(r.Context(), o, id, "")
	})
}
