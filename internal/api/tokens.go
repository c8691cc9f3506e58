package api

import (
	"net/http"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

type apiTokenJSON struct {
	ID         string     `json:"id"`
	UserEmail  string     `json:"userEmail"`
	Name       string     `json:"name"`
	CreatedAt  time.Time  `json:"createdAt"`
	LastUsedAt *time.Time `json:"lastUsedAt"`
	RevokedAt  *time.Time `json:"revokedAt"`
}

// apiTokenCreatedJSON is the one answer that holds the token itself.
type apiTokenCreatedJSON struct {
	ID        string `json:"id"`
	Token     string `json:"token"`
	UserEmail string `json:"userEmail"`
	Name      string `json:"name"`
}

type apiTokenRequest struct {
	Name      string `json:"name"`
	UserEmail string `json:"userEmail"` // empty: the caller
}

// tokensList serves GET /api/tokens: API tokens as metadata, never secrets or their hashes. An
// admin sees everyone's (or one person's, with user=EMAIL); anyone else sees only their own,
// and asking for another person's answers an empty list, as for a person without tokens.
func (s *Server) tokensList(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanList(), escrow.ActionTokenRead, ""); err != nil {
		return err
	}
	q := newQuery(r, "user")
	user := q.str("user", 256)
	if q.err != nil {
		return q.err
	}
	if user != "" {
		var err error
		if user, err = escrow.CanonicalName("user", user); err != nil {
			return err
		}
	}
	out := listJSON[apiTokenJSON]{Items: []apiTokenJSON{}}
	if !p.CanAdminister() {
		if user != "" && !escrow.SameName(user, p.Email) {
			return writeJSON(w, http.StatusOK, out)
		}
		user = p.Email
	}
	tokens, err := s.store.ListAPITokens(r.Context(), user)
	if err != nil {
		return err
	}
	for _, t := range tokens {
		out.Items = append(out.Items, toAPITokenJSON(t))
	}
	return writeJSON(w, http.StatusOK, out)
}

func toAPITokenJSON(t escrow.APIToken) apiTokenJSON {
	return apiTokenJSON{ID: t.ID, UserEmail: t.UserEmail, Name: t.Name, CreatedAt: t.CreatedAt,
		LastUsedAt: timeOrNull(t.LastUsedAt), RevokedAt: timeOrNull(t.RevokedAt)}
}

// tokensCreate serves POST /api/tokens (admin): a token for the given person, or for the admin
// when userEmail is left out, shown in this answer only. Only admins create tokens (SPEC §7):
// if a person could mint tokens for themself, a leaked token could mint a fresh one, and
// revoking the leaked token would not shut the holder out.
func (s *Server) tokensCreate(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanAdminister(), escrow.ActionTokenCreate, ""); err != nil {
		return err
	}
	var req apiTokenRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if err := escrow.CheckText("name", req.Name, false, 200); err != nil {
		return err
	}
	user := p.Email
	if req.UserEmail != "" {
		var err error
		if user, err = escrow.CanonicalName("userEmail", req.UserEmail); err != nil {
			return err
		}
	}
	tok, err := s.store.CreateAPIToken(r.Context(), origin(r, p), user, req.Name)
	if escrow.ErrorCode(err) == escrow.CodeNotFound {
		return escrow.Errorf(escrow.CodeInvalid, "userEmail: no user with this email")
	}
	if err != nil {
		return err
	}
	out := apiTokenCreatedJSON{ID: tok.ID, Token: tok.String(), UserEmail: user, Name: req.Name}
	return writeJSON(w, http.StatusCreated, out)
}

// tokensRevoke serves DELETE /api/tokens/{id}: an admin revokes any token, anyone else only
// their own (another person's answers 404, like an unknown ID). The token answers 401 from the
// next request on, on every server.
func (s *Server) tokensRevoke(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	id, ok := escrow.ParseTokenID(r.PathValue("id"))
	if !ok {
		return escrow.Errorf(escrow.CodeNotFound, "token: no such token")
	}
	if err := s.authorize(r, p.CanList(), escrow.ActionTokenRevoke, ""); err != nil {
		return err
	}
	if err := newQuery(r).err; err != nil {
		return err
	}
	owner := ""
	if !p.CanAdminister() {
		owner = p.Email
	}
	if err := s.store.RevokeAPIToken(r.Context(), origin(r, p), id, owner); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
