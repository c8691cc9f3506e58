package api

import (
	"net/http"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

type enrollmentTokenRequest struct {
	Uses    int64  `json:"uses"`    // 0: unlimited
	Expires string `json:"expires"` // a duration like "7d"; empty: never
}

type enrollmentTokenJSON struct {
	ID    string `json:"id"`
	Token string `json:"token"`
}

// enrollmentTokensCreate serves POST /api/enrollment-tokens (admin). The token is in this
// answer only; Keyward keeps its hash.
func (s *Server) enrollmentTokensCreate(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanAdminister(), escrow.ActionEnrollTokenCreate, ""); err != nil {
		return err
	}
	var req enrollmentTokenRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return err
	}
	var validFor time.Duration
	if req.Expires != "" {
		d, err := escrow.ParseDuration(req.Expires)
		if err != nil || d < time.Second {
			return escrow.Errorf(escrow.CodeInvalid, "expires: must be a duration of at least 1s, like 7d or 36h")
		}
		validFor = d
	}
	t, err := s.store.CreateEnrollmentToken(r.Context(), origin(r, p), req.Uses, validFor)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, enrollmentTokenJSON{ID: t.ID, Token: t.Token.String()})
}
