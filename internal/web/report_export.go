package web

import (
	"encoding/csv"
	"net/http"
	"time"
)

// reportExport serves GET /reports/escrow.csv: the devices the escrow report lists, one row
// each, with the same columns as the API's CSV.
func (s *Server) reportExport(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanReadReports(), "report.read", ""); err != nil {
		return err
	}
	rep, err := s.store.EscrowReport(r.Context(), p.Scope())
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="keyward-escrow-report.csv"`)
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"deviceId", "deviceName", "ownerUpn", "escrowStatus", "problem", "why", "since", "lastSeenAt"})
	for _, pr := range rep.Problems {
		since := ""
		if !pr.Status.Since.IsZero() {
			since = pr.Status.Since.UTC().Format(time.RFC3339)
		}
		_ = cw.Write([]string{pr.Device.ID, defuse(pr.Device.Name), defuse(pr.Device.OwnerUPN), string(pr.Status.Status), pr.Problem,
			defuse(pr.Status.Why), since, pr.Device.LastSeenAt.UTC().Format(time.RFC3339)})
	}
	cw.Flush()
	if cw.Error() != nil {
		return errAborted
	}
	return nil
}

// defuse keeps a spreadsheet from executing a cell that a device controls (its hostname, its
// owner): a leading =, +, -, @, tab or carriage return gets a quote.
func defuse(s string) string {
	if s != "" && (s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@' || s[0] == '\t' || s[0] == '\r') {
		return "'" + s
	}
	return s
}
