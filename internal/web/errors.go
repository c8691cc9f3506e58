package web

import (
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// statusOf is the one table from error codes to HTTP statuses.
var statusOf = map[escrow.Code]int{
	escrow.CodeInvalid:      http.StatusBadRequest,
	escrow.CodeUnauthorized: http.StatusUnauthorized,
	escrow.CodeForbidden:    http.StatusForbidden,
	escrow.CodeNotFound:     http.StatusNotFound,
	escrow.CodeConflict:     http.StatusConflict,
	escrow.CodeNotEncrypted: http.StatusConflict,
	escrow.CodeTooLarge:     http.StatusRequestEntityTooLarge,
	escrow.CodeRateLimited:  http.StatusTooManyRequests,
	escrow.CodeUnavailable:  http.StatusServiceUnavailable,
	escrow.CodeInternal:     http.StatusInternalServerError,
}

// titleOf is the heading of the error page for each status.
var titleOf = map[int]string{
	http.StatusBadRequest:            "Please check what you entered",
	http.StatusUnauthorized:          "Sign-in failed",
	http.StatusForbidden:             "Not allowed",
	http.StatusNotFound:              "Not found",
	http.StatusConflict:              "That cannot be done now",
	http.StatusRequestEntityTooLarge: "Too much data",
	http.StatusTooManyRequests:       "Too many attempts",
	http.StatusServiceUnavailable:    "Keyward is unavailable",
	http.StatusInternalServerError:   "Something went wrong",
}

// limitedError is a refusal by a rate limit, with how long to wait.
type limitedError struct {
	wait time.Duration
}

func (e *limitedError) Error() string { return "rate limited" }

func (e *limitedError) Unwrap() error {
	return escrow.Errorf(escrow.CodeRateLimited, "Too many attempts. Please wait %s and try again.", waitText(e.wait))
}

func waitText(d time.Duration) string {
	if d < time.Minute {
		return "a minute"
	}
	m := int(math.Ceil(d.Minutes()))
	if m == 1 {
		return "1 minute"
	}
	return strconv.Itoa(m) + " minutes"
}

// errAborted marks a response that already started; nothing more can be written.
var errAborted = errors.New("response already started")

type errorData struct {
	layout
	Status  int
	Message string
	Back    string
}

// writeError answers with an error page showing err's caller-safe message; the cause goes to
// the log for server errors only. Neither ever holds key material or passwords: the store and
// the parsers guarantee that.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := escrow.ErrorCode(err)
	status, ok := statusOf[code]
	if !ok {
		status = http.StatusInternalServerError
	}
	if status >= 500 {
		s.log.LogAttrs(r.Context(), slog.LevelError, "portal request failed", slog.String("method", r.Method),
			slog.String("path", r.URL.Path), slog.Int("status", status), slog.String("error", err.Error()))
	}
	if le, ok := errors.AsType[*limitedError](err); ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(le.wait.Seconds()))))
	}
	msg := escrow.ErrorMessage(err)
	if status == http.StatusInternalServerError {
		msg = "The server could not finish this request. It has been logged; please try again."
	}
	d := &errorData{Status: status, Message: msg, Back: "/"}
	s.renderError(w, r, status, d)
}

// renderError renders the error view; if even that fails, a plain-text answer goes out.
func (s *Server) renderError(w http.ResponseWriter, r *http.Request, status int, d *errorData) {
	markAuthorized(r) // an error page grants nothing
	if err := s.render(w, r, status, viewError, titleOf[status], "", d); err != nil {
		s.log.LogAttrs(r.Context(), slog.LevelError, "error page failed", slog.String("error", err.Error()))
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(http.StatusText(status) + "\n"))
	}
}

// notFound answers every path that is no page.
func (s *Server) notFound(w http.ResponseWriter, r *http.Request) error {
	return escrow.Errorf(escrow.CodeNotFound, "There is no page at this address.")
}

// crossOriginDenied answers a state-changing request that came from another site. Nothing was
// done; the page says so.
func (s *Server) crossOriginDenied(w http.ResponseWriter, r *http.Request) {
	s.renderError(w, r, http.StatusForbidden, &errorData{Status: http.StatusForbidden, Back: "/",
		Message: "This request came from another site and was refused. Nothing was changed. Open Keyward directly and try again."})
}
