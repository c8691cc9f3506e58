package web

import (
	"bufio"
	"encoding/csv"
	"net/http"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// reportExport serves GET /reports/escrow.csv: the devices the escrow report lists, one row
// each, with the same columns as the API's CSV.
func (s *Server) reportExport(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanReadReports(), "report.read", ""); err != nil {
		return err
	}
	// Streamed as the store reads it: nothing is written before the store's first answer, so
	// an error before that still gets its page.
	bw := bufio.NewWriterSize(w, 32<<10)
	cw := csv.NewWriter(bw)
	started := false
	head := func(escrow.EscrowReport) error {
		started = true
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="keyward-escrow-report.csv"`)
		w.WriteHeader(http.StatusOK)
		return cw.Write([]string{"deviceId", "deviceName", "ownerUpn", "escrowStatus", "problem", "why", "since", "lastSeenAt"})
	}
	_, err := s.store.StreamEscrowReport(r.Context(), p.Scope(), escrow.ReportPage{}, head, func(pr escrow.ReportProblem) error {
		since := ""
		if !pr.Status.Since.IsZero() {
			since = pr.Status.Since.UTC().Format(time.RFC3339)
		}
		return cw.Write([]string{pr.Device.ID, defuse(pr.Device.Name), defuse(pr.Device.OwnerUPN), string(pr.Status.Status), pr.Problem,
			defuse(pr.Status.Why), since, pr.Device.LastSeenAt.UTC().Format(time.RFC3339)})
	})
	if err != nil {
		if started {
			return errAborted
		}
		return err
	}
	cw.Flush()
	if cw.Error() != nil || bw.Flush() != nil {
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
