package web

import (
	"net/http"
	"strconv"

	"github.com/keyward/keyward/internal/escrow"
)

type auditData struct {
	layout
	Form     auditForm
	Events   []escrow.AuditEvent
	Next     string
	Export   string
	Actions  []string
	Sources  []escrow.Source
	Outcomes []escrow.Outcome
	Error    string
}

// auditList serves GET /audit: the audit log, newest first, with the API's filters, a page at
// a time, and a link to export what the filters select as CSV.
func (s *Server) auditList(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanReadAudit(), "audit.read", ""); err != nil {
		return err
	}
	fm, f, err := parseAuditForm(r.URL.Query())
	d := &auditData{Form: fm, Actions: auditActions, Sources: auditSources, Outcomes: auditOutcomes}
	d.Export = "/audit/export.csv"
	if v := fm.values(); len(v) > 0 {
		d.Export += "?" + v.Encode()
	}
	if err != nil {
		d.Error = escrow.ErrorMessage(err)
		return s.render(w, r, http.StatusBadRequest, viewAudit, "Audit log", "audit", d)
	}
	f.Limit = pageSize + 1
	err = s.store.ListAudit(r.Context(), f, func(e escrow.AuditEvent) error {
		d.Events = append(d.Events, e)
		return nil
	})
	if err != nil {
		return err
	}
	if len(d.Events) > pageSize {
		d.Events = d.Events[:pageSize]
		v := fm.values()
		v.Set("before", strconv.FormatInt(d.Events[pageSize-1].Seq, 10))
		d.Next = "/audit?" + v.Encode()
	}
	return s.render(w, r, http.StatusOK, viewAudit, "Audit log", "audit", d)
}
