package web

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/keyward/keyward/internal/escrow"
)

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

type ctxKey int

const (
	principalKey ctxKey = iota
	authzKey
	tokenHashKey
)

// sessionCookie is the cookie that holds a session's token. Only its SHA-256 is stored.
const sessionCookie = "keyward_session"

// csp is the Content-Security-Policy of every portal answer: scripts and styles only from
// files of this origin (no inline script or style anywhere), nothing from other hosts, forms
// only to this origin, never inside a frame.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// securityHeaders sets the headers every portal answer carries. Pages are never cached: they
// show key material, tokens, or at least who may see what.
func (s *Server) securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		if r.TLS != nil || s.httpsOnly {
			h.Set("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
		}
		next.ServeHTTP(w, r)
	})
}

// authz records whether the handler checked authorization. The backstop reads it.
type authz struct{ checked bool }

// public serves a route anyone may call: sign-in, static files, the not-found page.
func (s *Server) public(h handlerFunc) http.Handler {
	return s.serve(func(w http.ResponseWriter, r *http.Request) error {
		markAuthorized(r)
		return h(w, r)
	})
}

// signedIn serves a route that needs a session; the handler must call authorize. A browser
// without a valid session is sent to the sign-in page, and comes back here afterwards.
func (s *Server) signedIn(h handlerFunc) http.Handler {
	return s.serve(func(w http.ResponseWriter, r *http.Request) error {
		p, hash, err := s.session(r)
		if escrow.ErrorCode(err) == escrow.CodeUnauthorized {
			if _, had := r.Cookie(sessionCookie); had == nil {
				s.clearCookie(w, r, sessionCookie, "/") // an ended session's cookie is of no more use
			}
			markAuthorized(r) // sending someone to sign in reveals nothing
			next := ""
			if r.Method == http.MethodGet {
				next = "?next=" + url.QueryEscape(r.URL.RequestURI())
			}
			http.Redirect(w, r, "/signin"+next, http.StatusSeeOther)
			return nil
		}
		if err != nil {
			return err
		}
		ctx := context.WithValue(r.Context(), principalKey, p)
		ctx = context.WithValue(ctx, tokenHashKey, hash)
		return h(w, r.WithContext(ctx))
	})
}

// session returns the principal of the request's session cookie and the token's hash.
// Errors: CodeUnauthorized.
func (s *Server) session(r *http.Request) (escrow.Principal, []byte, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || len(c.Value) != 43 {
		return escrow.Principal{}, nil, escrow.Errorf(escrow.CodeUnauthorized, "not signed in")
	}
	hash := tokenHash(c.Value)
	p, err := s.store.SessionPrincipal(r.Context(), hash, s.cfg.SessionIdle)
	return p, hash, err
}

// newToken returns a random token (256 bits, base64url) and the hash the database keeps.
func newToken() (string, []byte, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", nil, err
	}
	tok := base64.RawURLEncoding.EncodeToString(b)
	return tok, tokenHash(tok), nil
}

func tokenHash(tok string) []byte {
	h := sha256.Sum256([]byte(tok))
	return h[:]
}

// secure reports whether cookies must be marked Secure: under TLS, or when the portal's public
// URL is https (TLS ends at a proxy in front).
func (s *Server) secure(r *http.Request) bool { return r.TLS != nil || s.httpsOnly }

func (s *Server) setCookie(w http.ResponseWriter, r *http.Request, name, value, path string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: path, MaxAge: maxAge, HttpOnly: true,
		Secure: s.secure(r), SameSite: http.SameSiteLaxMode})
}

func (s *Server) clearCookie(w http.ResponseWriter, r *http.Request, name, path string) {
	s.setCookie(w, r, name, "", path, -1)
}

// serve runs a handler under the authorization backstop and turns its error into an error page.
func (s *Server) serve(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		az := &authz{}
		r = r.WithContext(context.WithValue(r.Context(), authzKey, az))
		g := &guard{ResponseWriter: w, az: az, s: s, r: r}
		if err := h(g, r); err != nil {
			if errors.Is(err, errAborted) {
				return
			}
			if g.started {
				// Part of the answer is out: cut the connection so that the browser sees a broken
				// download, not a complete-looking one.
				s.log.LogAttrs(r.Context(), slog.LevelError, "response aborted", slog.String("path", r.URL.Path), slog.String("error", err.Error()))
				panic(http.ErrAbortHandler)
			}
			s.writeError(g, r, err)
		}
	})
}

// guard is the authorization backstop: the first success status written by a handler that
// never checked authorization is replaced by a 500 page, and its body dropped.
type guard struct {
	http.ResponseWriter
	az      *authz
	s       *Server
	r       *http.Request
	started bool
	blocked bool
}

func (g *guard) WriteHeader(status int) {
	if g.started {
		return
	}
	g.started = true
	if status < 400 && !g.az.checked {
		g.blocked = true
		g.s.log.LogAttrs(g.r.Context(), slog.LevelError, "portal handler answered without checking authorization",
			slog.String("method", g.r.Method), slog.String("path", g.r.URL.Path))
		h := g.ResponseWriter.Header()
		for _, k := range []string{"Location", "Content-Disposition", "Set-Cookie"} {
			h.Del(k)
		}
		h.Set("Content-Type", "text/plain; charset=utf-8")
		g.ResponseWriter.WriteHeader(http.StatusInternalServerError)
		_, _ = g.ResponseWriter.Write([]byte("internal error\n"))
		return
	}
	g.ResponseWriter.WriteHeader(status)
}

func (g *guard) Write(b []byte) (int, error) {
	if !g.started {
		g.WriteHeader(http.StatusOK)
	}
	if g.blocked {
		return len(b), nil
	}
	return g.ResponseWriter.Write(b)
}

// Flush lets exports reach the browser as they are written.
func (g *guard) Flush() {
	if f, ok := g.ResponseWriter.(http.Flusher); ok && !g.blocked {
		f.Flush()
	}
}

func markAuthorized(r *http.Request) {
	if az, ok := r.Context().Value(authzKey).(*authz); ok {
		az.checked = true
	}
}

func principal(r *http.Request) escrow.Principal {
	p, _ := r.Context().Value(principalKey).(escrow.Principal)
	return p
}

func sessionHash(r *http.Request) []byte {
	h, _ := r.Context().Value(tokenHashKey).([]byte)
	return h
}

// authorize marks the request as checked and answers whether ok. A refusal is recorded in the
// audit trail as a denied attempt of action.
func (s *Server) authorize(r *http.Request, ok bool, action, deviceID string) error {
	markAuthorized(r)
	if ok {
		return nil
	}
	p := principal(r)
	e := origin(r, p).Event(action, escrow.OutcomeDenied)
	e.DeviceID, e.Detail = deviceID, "not allowed for role "+string(p.Role)
	if err := s.store.Record(r.Context(), e); err != nil {
		return err
	}
	return escrow.Errorf(escrow.CodeForbidden, "Your role (%s) may not open this page.", roleLabel(p.Role))
}

// origin describes who is acting and from where, for the audit trail: self-service pages are
// source self_service, everything else in the portal admin_portal. The client address is the
// connection's: a forwarded-for header is whatever the client wants it to be.
func origin(r *http.Request, p escrow.Principal) escrow.Origin {
	src := escrow.SourceAdminPortal
	if r.URL.Path == "/my" || strings.HasPrefix(r.URL.Path, "/my/") {
		src = escrow.SourceSelfService
	}
	return escrow.Origin{Actor: p.Actor, Source: src, IP: clientIP(r), UserAgent: cleanHeader(r.UserAgent(), 256)}
}

func clientIP(r *http.Request) string {
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return ip
}

// cleanHeader makes text from outside (a header, a path, a claim) safe to keep in the audit
// trail: cut to max bytes on a character boundary, then control and format characters and
// invalid UTF-8 escaped (escrow.CleanText), so a terminal or log viewer shows them instead of
// acting on them.
func cleanHeader(s string, max int) string {
	if len(s) > max {
		for max > 0 && !utf8.RuneStart(s[max]) {
			max--
		}
		s = s[:max]
	}
	return escrow.CleanText(s)
}
