package web

import (
	"net/http"

	"github.com/keyward/keyward/internal/escrow"
)

// enrollmentTokenRevoke serves POST /tokens/enrollment/{tokenId}/revoke (admins): no device
// enrolls with the token any more; devices already enrolled keep their own tokens.
func (s *Server) enrollmentTokenRevoke(w http.ResponseWriter, r *http.Request) error {
	return s.revokeToken(w, r, escrow.ActionEnrollTokenRevoke, "enrollment-token-revoked", func(o escrow.Origin, id string) error {
		return s.store.RevokeEnrollmentToken(r.Context(), o, id)
	})
}
