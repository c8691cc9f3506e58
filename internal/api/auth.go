package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/keyward/keyward/internal/escrow"
)

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

type ctxKey int

const (
	principalKey ctxKey = iota
	authzKey
)

// authz records whether the handler checked authorization. The backstop reads it.
type authz struct{ checked bool }

// public serves a route anyone may call; the handler authenticates by other means (an
// enrollment token in the body) or serves nothing secret.
func (s *Server) public(h handlerFunc) http.Handler {
	return s.serve(func(w http.ResponseWriter, r *http.Request) error {
		markAuthorized(r)
		return h(w, r)
	})
}

// person serves a route for people (API tokens); the handler must call authorize.
func (s *Server) person(h handlerFunc) http.Handler {
	return s.serve(func(w http.ResponseWriter, r *http.Request) error {
		p, err := s.authenticate(r, escrow.TokenAPI)
		if err != nil {
			return err
		}
		return h(w, r.WithContext(context.WithValue(r.Context(), principalKey, p)))
	})
}

// device serves an agent route. A device may act only on itself, and every agent handler
// takes the device ID from the principal, never from the request: being a device is the
// authorization.
func (s *Server) device(h handlerFunc) http.Handler {
	return s.serve(func(w http.ResponseWriter, r *http.Request) error {
		p, err := s.authenticate(r, escrow.TokenDevice)
		if err != nil {
			return err
		}
		markAuthorized(r)
		return h(w, r.WithContext(context.WithValue(r.Context(), principalKey, p)))
	})
}

// serve runs a handler under the authorization backstop and turns its error into an answer.
func (s *Server) serve(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		az := &authz{}
		r = r.WithContext(context.WithValue(r.Context(), authzKey, az))
		g := &guard{ResponseWriter: w, az: az, s: s, r: r}
		if err := h(g, r); err != nil {
			if errors.Is(err, errAborted) {
				return // the client went away
			}
			if g.started {
				// Headers and part of the body are out: cut the connection so that the client
				// sees a broken answer, not a complete-looking one.
				s.log.LogAttrs(r.Context(), slog.LevelError, "response aborted", slog.String("path", r.URL.Path), slog.String("error", err.Error()))
				panic(http.ErrAbortHandler)
			}
			s.writeError(g, r, err)
		}
	})
}

// guard is the authorization backstop: the first success status written by a handler that
// never checked authorization is replaced by a 500, and its body dropped.
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
		g.s.log.LogAttrs(g.r.Context(), slog.LevelError, "handler answered without checking authorization",
			slog.String("method", g.r.Method), slog.String("path", g.r.URL.Path))
		_ = writeJSON(g.ResponseWriter, 500, errorBody{errorDetail{Code: escrow.CodeInternal, Message: "internal error"}})
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

// Flush lets streamed answers reach the client as they are written.
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

// authenticate checks the bearer token, which must be of the kind the route takes. A bad token
// is recorded in the audit trail: it is a denied attempt.
func (s *Server) authenticate(r *http.Request, kind escrow.TokenKind) (escrow.Principal, error) {
	h := r.Header.Get("Authorization")
	scheme, raw, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return escrow.Principal{}, escrow.Errorf(escrow.CodeUnauthorized, "Authorization: send a token as Bearer")
	}
	tok, err := escrow.ParseToken(strings.TrimSpace(raw))
	if err == nil && tok.Kind != kind {
		err = escrow.Errorf(escrow.CodeUnauthorized, "the token is not valid for this endpoint")
	}
	var p escrow.Principal
	if err == nil {
		if kind == escrow.TokenDevice {
			p, err = s.store.AuthenticateDevice(r.Context(), tok)
		} else {
			p, err = s.store.AuthenticateAPIToken(r.Context(), tok)
		}
	}
	if escrow.ErrorCode(err) == escrow.CodeUnauthorized {
		o := origin(r, escrow.Principal{Actor: escrow.Actor{Type: escrow.ActorToken, ID: tok.ID}})
		n, wait := s.authFailures.hit(o.IP)
		e := o.Event(escrow.ActionAuth, escrow.OutcomeDenied)
		e.Detail = "invalid token for " + cleanHeader(r.Method, 32) + " " + cleanHeader(r.URL.Path, 512)
		if wait > 0 {
			if n > authFailureLimit+1 {
				return p, rateLimited{wait: wait}
			}
			e.Detail += fmt.Sprintf("; too many invalid tokens from this address: the next %s are refused and not recorded", wait.Round(time.Second))
			err = rateLimited{wait: wait}
		}
		if rerr := s.store.Record(r.Context(), e); rerr != nil {
			return p, rerr
		}
	}
	return p, err
}

// rateLimited refuses a request for a while: 429, with Retry-After. Its message is
// rateLimitedMessage unless msg says otherwise.
type rateLimited struct {
	wait time.Duration
	msg  string
}

const rateLimitedMessage = "too many invalid tokens from this address; try again later"

func (e rateLimited) Error() string {
	if e.msg != "" {
		return e.msg
	}
	return rateLimitedMessage
}

func (e rateLimited) Unwrap() error { return escrow.Errorf(escrow.CodeRateLimited, "%s", e.Error()) }

// authorize marks the request as checked and answers whether ok. A refusal is recorded as a
// denied attempt of action.
func (s *Server) authorize(r *http.Request, ok bool, action, deviceID string) error {
	markAuthorized(r)
	if ok {
		return nil
	}
	e := origin(r, principal(r)).Event(action, escrow.OutcomeDenied)
	e.DeviceID, e.Detail = deviceID, "not allowed for role "+string(principal(r).Role)
	if err := s.store.Record(r.Context(), e); err != nil {
		return err
	}
	return escrow.Errorf(escrow.CodeForbidden, "your role may not do this")
}

// origin describes who is calling and from where, for the audit trail.
func origin(r *http.Request, p escrow.Principal) escrow.Origin {
	src := escrow.SourceAPI
	if p.DeviceID != "" || strings.HasPrefix(r.URL.Path, "/api/agent/") {
		src = escrow.SourceAgent
	}
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip = r.RemoteAddr
	}
	return escrow.Origin{Actor: p.Actor, Source: src, IP: ip, UserAgent: cleanHeader(r.UserAgent(), 256)}
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
