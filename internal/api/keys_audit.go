package api

import (
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/escrow"
)

// keysAudit serves GET /api/devices/security/bitlocker/keys/audit: the audit log, newest first,
// streamed in the chosen format. JSON pages like every list (limit 100 by default); NDJSON and
// CSV are exports and return everything that matches unless a limit is given.
func (s *Server) keysAudit(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanReadAudit(), "audit.read", ""); err != nil {
		return err
	}
	q := newQuery(r, "deviceId", "keyId", "actor", "action", "source", "outcome", "ticket", "since", "until", "format", "limit", "cursor")
	format, err := audit.ParseFormat(q.values.Get("format"))
	if err != nil {
		return err
	}
	f := escrow.AuditFilter{
		DeviceID: q.deviceID("deviceId"),
		Actor:    q.str("actor", 256),
		Action:   q.str("action", 64),
		Source:   q.str("source", 32),
		Outcome:  q.str("outcome", 32),
		Ticket:   strings.TrimSpace(q.str("ticket", escrow.MaxTicket)),
		Since:    q.time("since"),
		Until:    q.time("until"),
	}
	if v := q.values.Get("keyId"); v != "" {
		if f.KeyID, err = escrow.ParseKeyID(v); err != nil {
			return err
		}
	}
	limit := q.limit(0)
	if format == audit.FormatJSON && limit == 0 {
		limit = 100
	}
	if limit > 0 {
		f.Limit = limit + 1 // one more tells whether there is a next page
	}
	if c := q.values.Get("cursor"); c != "" {
		if f.Before, err = parseAuditCursor(c); err != nil {
			return err
		}
	}
	if q.err != nil {
		return q.err
	}

	w.Header().Set("Content-Type", audit.ContentType(format))
	if format == audit.FormatCSV {
		w.Header().Set("Content-Disposition", `attachment; filename="keyward-audit.csv"`)
	}
	aw, err := audit.NewWriter(format, w)
	if err != nil {
		return err
	}
	var n int
	var last int64
	next := ""
	err = s.store.ListAudit(r.Context(), f, func(e escrow.AuditEvent) error {
		if limit > 0 && n == limit {
			next = auditCursor(last)
			return nil
		}
		n, last = n+1, e.Seq
		return aw.Write(e)
	})
	if err != nil {
		return err
	}
	return aw.Close(next)
}

func auditCursor(seq int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte("seq:" + strconv.FormatInt(seq, 10)))
}

func parseAuditCursor(c string) (int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	seq, perr := strconv.ParseInt(strings.TrimPrefix(string(b), "seq:"), 10, 64)
	if err != nil || perr != nil || !strings.HasPrefix(string(b), "seq:") || seq < 1 {
		return 0, escrow.Errorf(escrow.CodeInvalid, "cursor: not a cursor this listing gave out")
	}
	return seq, nil
}
