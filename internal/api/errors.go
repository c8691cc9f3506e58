package api

import (
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"

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

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    escrow.Code `json:"code"`
	Message string      `json:"message"`
}

// writeError answers with err's caller-safe message; the cause goes to the log for server
// errors only. Neither ever holds key material: the stores and parsers guarantee that.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := escrow.ErrorCode(err)
	status, ok := statusOf[code]
	if !ok {
		status = http.StatusInternalServerError
	}
	if status >= 500 {
		s.log.LogAttrs(r.Context(), slog.LevelError, "request failed", slog.String("method", r.Method),
			slog.String("path", r.URL.Path), slog.Int("status", status), slog.String("error", err.Error()))
	}
	if rl, ok := errors.AsType[rateLimited](err); ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(rl.wait.Seconds()))))
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="keyward"`)
	}
	_ = writeJSON(w, status, errorBody{errorDetail{Code: code, Message: escrow.ErrorMessage(err)}})
}

// errAborted marks a response that already started; nothing more can be written.
var errAborted = errors.New("response already started")
