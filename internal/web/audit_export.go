package web

import (
	"net/http"

	"github.com/keyward/keyward/internal/audit"
)

// auditExport serves GET /audit/export.csv: every event the filters select, as CSV, streamed
// in the same format as the API's export.
func (s *Server) auditExport(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanReadAudit(), "audit.read", ""); err != nil {
		return err
	}
	_, f, err := parseAuditForm(r.URL.Query())
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", audit.ContentType(audit.FormatCSV))
	w.Header().Set("Content-Disposition", `attachment; filename="keyward-audit.csv"`)
	aw, err := audit.NewWriter(audit.FormatCSV, w)
	if err != nil {
		return err
	}
	if err := s.store.ListAudit(r.Context(), f, aw.Write); err != nil {
		return err
	}
	return aw.Close("")
}
