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

type enrollmentTokenInfoJSON struct {
	ID        string     `json:"id"`
	UsesLeft  *int64     `json:"usesLeft"` // null: unlimited
	ExpiresAt *time.Time `json:"expiresAt"`
	CreatedBy string     `json:"createdBy"`
	CreatedAt time.Time  `json:"createdAt"`
	RevokedAt *time.Time `json:"revokedAt"`
}

// enrollmentTokensList serves GET /api/enrollment-tokens (admin): every enrollment token,
// without its secret.
func (s *Server) enrollmentTokensList(w http.ResponseWriter, r *http.Request) error {
	if err := s.authorize(r, principal(r).CanAdminister(), escrow.ActionEnrollTokenRead, ""); err != nil {
		return err
	}
	if err := newQuery(r).err; err != nil {
		return err
	}
	tokens, err := s.store.ListEnrollmentTokens(r.Context())
	if err != nil {
		return err
	}
	out := listJSON[enrollmentTokenInfoJSON]{Items: make([]enrollmentTokenInfoJSON, 0, len(tokens))}
	for _, t := range tokens {
		out.Items = append(out.Items, enrollmentTokenInfoJSON{ID: t.ID, UsesLeft: t.UsesLeft, ExpiresAt: timeOrNull(t.ExpiresAt),
			CreatedBy: t.CreatedBy, CreatedAt: t.CreatedAt, RevokedAt: timeOrNull(t.RevokedAt)})
	}
	return writeJSON(w, http.StatusOK, out)
}

// enrollmentTokensRevoke serves DELETE /api/enrollment-tokens/{id} (admin): no device enrolls
// with the token any more; devices it already enrolled keep their own tokens.
func (s *Server) enrollmentTokensRevoke(w http.ResponseWriter, r *http.Request) error {
	id, ok := escrow.ParseTokenID(r.PathValue("id"))
	if !ok {
		return escrow.Errorf(escrow.CodeNotFound, "enrollment token: no such token")
	}
	p := principal(r)
	if err := s.authorize(r, p.CanAdminister(), escrow.ActionEnrollTokenRevoke, ""); err != nil {
		return err
	}
	if err := newQuery(r).err; err != nil {
		return err
	}
	if err := s.store.RevokeEnrollmentToken(r.Context(), origin(r, p), id); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
