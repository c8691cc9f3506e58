package api

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/escrow"
)

// authOnly is a Store that knows one API token and nothing else; the backstop needs no more.
type authOnly struct{ Store }

func (authOnly) AuthenticateAPIToken(context.Context, escrow.Token) (escrow.Principal, error) {
	return escrow.Principal{Role: escrow.RoleAdmin, Actor: escrow.Actor{Type: escrow.ActorToken, ID: "t"}}, nil
}

func TestBackstopBlocksUncheckedSuccess(t *testing.T) {
	s := New(authOnly{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	forgot := s.person(func(w http.ResponseWriter, r *http.Request) error {
		return writeJSON(w, http.StatusOK, map[string]string{"secret": "material"})
	})
	checked := s.person(func(w http.ResponseWriter, r *http.Request) error {
		markAuthorized(r)
		return writeJSON(w, http.StatusOK, map[string]string{"secret": "material"})
	})
	tok, _ := escrow.NewToken(escrow.TokenAPI, strings.NewReader(strings.Repeat("x", 40)))
	for name, c := range map[string]struct {
		h      http.Handler
		status int
		leak   bool
	}{
		"forgot to authorize": {forgot, 500, false},
		"authorized":          {checked, 200, true},
	} {
		t.Run(name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/x", nil)
			req.Header.Set("Authorization", "Bearer "+tok.String())
			rec := httptest.NewRecorder()
			c.h.ServeHTTP(rec, req)
			if rec.Code != c.status {
				t.Fatalf("status %d, want %d", rec.Code, c.status)
			}
			if strings.Contains(rec.Body.String(), "material") != c.leak {
				t.Fatalf("body %q", rec.Body.String())
			}
		})
	}
}
