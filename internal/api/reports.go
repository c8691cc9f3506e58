package api

import (
	"encoding/csv"
	"net/http"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

type escrowReportJSON struct {
	GeneratedAt time.Time                   `json:"generatedAt"`
	Total       int                         `json:"total"`
	Counts      map[escrow.EscrowStatus]int `json:"counts"`
	Devices     []reportDeviceJSON          `json:"devices"`
}

type reportDeviceJSON struct {
	DeviceID     string              `json:"deviceId"`
	DeviceName   string              `json:"deviceName"`
	OwnerUPN     string              `json:"ownerUpn"`
	EscrowStatus escrow.EscrowStatus `json:"escrowStatus"`
	Problem      string              `json:"problem"`
	Why          string              `json:"why"`
	Since        *time.Time          `json:"since"`
	LastSeenAt   time.Time           `json:"lastSeenAt"`
}

// reportsEscrow serves GET /api/reports/escrow: the count of devices per escrow status and the
// devices that are failed, missing escrow, or pending for longer than the grace period; as
// JSON or, with format=csv, one CSV row per listed device.
func (s *Server) reportsEscrow(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanReadReports(), "report.read", ""); err != nil {
		return err
	}
	q := newQuery(r, "format")
	format := q.str("format", 16)
	if q.err != nil {
		return q.err
	}
	if format != "" && format != "json" && format != "csv" {
		return escrow.Errorf(escrow.CodeInvalid, "format: must be json or csv")
	}
	rep, err := s.store.EscrowReport(r.Context(), p.Scope())
	if err != nil {
		return err
	}
	out := escrowReportJSON{GeneratedAt: rep.GeneratedAt.UTC(), Total: rep.Total, Counts: rep.Counts, Devices: []reportDeviceJSON{}}
	for _, pr := range rep.Problems {
		out.Devices = append(out.Devices, reportDeviceJSON{
			DeviceID: pr.Device.ID, DeviceName: pr.Device.Name, OwnerUPN: pr.Device.OwnerUPN, EscrowStatus: pr.Status.Status,
			Problem: pr.Problem, Why: pr.Status.Why, Since: timeOrNull(pr.Status.Since), LastSeenAt: pr.Device.LastSeenAt.UTC(),
		})
	}
	if format != "csv" {
		return writeJSON(w, http.StatusOK, out)
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="keyward-escrow-report.csv"`)
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"deviceId", "deviceName", "ownerUpn", "escrowStatus", "problem", "why", "since", "lastSeenAt"})
	for _, d := range out.Devices {
		since := ""
		if d.Since != nil {
			since = d.Since.Format(time.RFC3339)
		}
		_ = cw.Write([]string{d.DeviceID, defuse(d.DeviceName), defuse(d.OwnerUPN), string(d.EscrowStatus), d.Problem, defuse(d.Why), since, d.LastSeenAt.Format(time.RFC3339)})
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
