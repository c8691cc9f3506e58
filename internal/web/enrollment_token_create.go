package web

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// enrollmentTokenCreate serves POST /tokens/enrollment (admins): a token that lets devices
// enroll, for some uses or unlimited, for a while or for good, shown this once.
func (s *Server) enrollmentTokenCreate(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanAdminister(), escrow.ActionEnrollTokenCreate, ""); err != nil {
		return err
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return escrow.Errorf(escrow.CodeInvalid, "The form could not be read.")
	}
	var uses int64
	var err error
	if v := strings.TrimSpace(r.PostForm.Get("uses")); v != "" {
		if uses, err = strconv.ParseInt(v, 10, 64); err != nil || uses < 0 {
			err = escrow.Errorf(escrow.CodeInvalid, "Uses: a number, 0 for unlimited.")
		}
	}
	expires := strings.TrimSpace(r.PostForm.Get("expires"))
	var d escrow.EnrollmentToken
	if err == nil {
		dur, perr := parseOptionalDuration(expires)
		if perr != nil {
			err = perr
		} else {
			d, err = s.store.CreateEnrollmentToken(r.Context(), origin(r, p), uses, dur)
		}
	}
	if escrow.ErrorCode(err) == escrow.CodeInvalid {
		return s.renderTokens(w, r, http.StatusBadRequest, &tokensData{Error: escrow.ErrorMessage(err)})
	}
	if err != nil {
		return err
	}
	details := "Unlimited uses"
	if uses > 0 {
		details = strconv.FormatInt(uses, 10) + " uses"
	}
	if expires != "" && expires != "0" {
		details += ", valid for " + expires
	} else {
		details += ", no expiry"
	}
	out := &tokenCreatedData{Kind: "Enrollment token", Token: d.Token.String(), Details: details + "."}
	return s.render(w, r, http.StatusCreated, viewTokenCreated, "Enrollment token created", "tokens", out)
}

// parseOptionalDuration reads a duration like 7d or 36h; empty or 0 is none.
func parseOptionalDuration(s string) (time.Duration, error) {
	if s == "" || s == "0" {
		return 0, nil
	}
	d, err := escrow.ParseDuration(s)
	if err != nil || d < time.Minute {
		return 0, escrow.Errorf(escrow.CodeInvalid, "Valid for: a duration like 7d or 36h, or empty for no expiry.")
	}
	return d, nil
}
