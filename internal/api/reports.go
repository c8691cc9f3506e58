package api

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"net/http"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

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
// devices that are failed, missing escrow, or pending for longer than the grace period, the
// longest-standing first; as JSON or, with format=csv, one CSV row per listed device. The list
// is streamed as the store reads it, so its length costs no memory: all of it by default, or a
// page with limit and cursor (the JSON then carries nextCursor).
func (s *Server) reportsEscrow(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanReadReports(), "report.read", ""); err != nil {
		return err
	}
	q := newQuery(r, "format", "limit", "cursor")
	format := q.str("format", 16)
	page := escrow.ReportPage{Cursor: q.str("cursor", 1024), Limit: q.limit(0)}
	if q.err != nil {
		return q.err
	}
	if format != "" && format != "json" && format != "csv" {
		return escrow.Errorf(escrow.CodeInvalid, "format: must be json or csv")
	}
	// Nothing is written until the store's snapshot has given its first answer: an error before
	// that (a bad cursor, the database down) still gets its status code.
	bw := bufio.NewWriterSize(w, 32<<10)
	started := false
	start := func(rep escrow.EscrowReport) error {
		started = true
		if format == "csv" {
			w.Header().Set("Content-Type", "text/csv; charset=utf-8")
			w.Header().Set("Content-Disposition", `attachment; filename="keyward-escrow-report.csv"`)
			w.WriteHeader(http.StatusOK)
			_, err := bw.WriteString("deviceId,deviceName,ownerUpn,escrowStatus,problem,why,since,lastSeenAt\n")
			return err
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		head, err := json.Marshal(struct {
			GeneratedAt time.Time                   `json:"generatedAt"`
			Total       int                         `json:"total"`
			Counts      map[escrow.EscrowStatus]int `json:"counts"`
		}{rep.GeneratedAt.UTC(), rep.Total, rep.Counts})
		if err != nil {
			return err
		}
		_, err = bw.Write(append(head[:len(head)-1], `,"devices":[`...))
		return err
	}
	cw := csv.NewWriter(bw)
	n := 0
	rep, err := s.store.StreamEscrowReport(r.Context(), p.Scope(), page, start, func(pr escrow.ReportProblem) error {
		d := reportDeviceJSON{
			DeviceID: pr.Device.ID, DeviceName: pr.Device.Name, OwnerUPN: pr.Device.OwnerUPN, EscrowStatus: pr.Status.Status,
			Problem: pr.Problem, Why: pr.Status.Why, Since: timeOrNull(pr.Status.Since), LastSeenAt: pr.Device.LastSeenAt.UTC(),
		}
		n++
		if format == "csv" {
			since := ""
			if d.Since != nil {
				since = d.Since.Format(time.RFC3339)
			}
			return cw.Write([]string{d.DeviceID, defuse(d.DeviceName), defuse(d.OwnerUPN), string(d.EscrowStatus), d.Problem,
				defuse(d.Why), since, d.LastSeenAt.Format(time.RFC3339)})
		}
		b, err := json.Marshal(d)
		if err != nil {
			return err
		}
		if n > 1 {
			bw.WriteByte(',')
		}
		_, err = bw.Write(b)
		return err
	})
	if err != nil {
		if started {
			return errAborted
		}
		return err
	}
	if format == "csv" {
		cw.Flush()
		if cw.Error() != nil {
			return errAborted
		}
	} else {
		tail := "]}\n"
		if rep.NextCursor != "" {
			c, _ := json.Marshal(rep.NextCursor)
			tail = `],"nextCursor":` + string(c) + "}\n"
		}
		bw.WriteString(tail)
	}
	if bw.Flush() != nil {
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
