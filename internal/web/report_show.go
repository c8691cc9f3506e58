package web

import (
	"net/http"
	"net/url"

	"github.com/keyward/keyward/internal/escrow"
)

type reportData struct {
	layout
	Report escrow.EscrowReport
	Bars   []bar
	Chart  chart
	Next   string // URL of the list's next page, "" on the last
	First  string // URL of its first page, "" on it
	Error  string
}

// bar is one status in the chart, laid out on the server: the page has no script, and the
// SVG's geometry lives in attributes, which the Content-Security-Policy allows (style
// attributes it would not).
type bar struct {
	Status escrow.EscrowStatus
	Label  string
	Count  int
	Share  int // whole percent of all devices
	Y      int // top of the bar
	TextY  int // baseline of its labels
	Width  int // length of the bar
	ValueX int // where the count is written
}

type chart struct {
	Width, Height, BarX, BarMax, BarHeight int
}

// reportShow serves GET /reports/escrow: how many devices in the caller's scope are in each of
// the four escrow statuses, as a chart drawn on the server, and the devices whose escrow
// failed, is missing, or has been pending too long, the longest-standing first, a page at a
// time (the CSV export has them all).
func (s *Server) reportShow(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanReadReports(), "report.read", ""); err != nil {
		return err
	}
	cursor := r.URL.Query().Get("cursor")
	var problems []escrow.ReportProblem
	collect := func(pr escrow.ReportProblem) error { problems = append(problems, pr); return nil }
	status := http.StatusOK
	rep, err := s.store.StreamEscrowReport(r.Context(), p.Scope(), escrow.ReportPage{Cursor: cursor, Limit: pageSize}, nil, collect)
	var notice string
	if escrow.ErrorCode(err) == escrow.CodeInvalid {
		// A cursor from an old link or a hand-made URL: show the first page and say so.
		notice, status, cursor = escrow.ErrorMessage(err), http.StatusBadRequest, ""
		problems = nil
		rep, err = s.store.StreamEscrowReport(r.Context(), p.Scope(), escrow.ReportPage{Limit: pageSize}, nil, collect)
	}
	if err != nil {
		return err
	}
	rep.Problems = problems
	d := &reportData{Report: rep, Chart: chart{Width: 640, BarX: 140, BarMax: 420, BarHeight: 28}, Error: notice}
	if rep.NextCursor != "" {
		d.Next = "/reports/escrow?" + url.Values{"cursor": {rep.NextCursor}}.Encode()
	}
	if cursor != "" {
		d.First = "/reports/escrow"
	}
	most := 0
	for _, n := range rep.Counts {
		most = max(most, n)
	}
	for i, st := range []escrow.EscrowStatus{escrow.StatusEscrowed, escrow.StatusPending, escrow.StatusFailed, escrow.StatusNotAvailable} {
		n := rep.Counts[st]
		b := bar{Status: st, Label: statusLabel(st), Count: n, Y: 12 + i*44}
		b.TextY = b.Y + 19
		if rep.Total > 0 {
			b.Share = (n*100 + rep.Total/2) / rep.Total
		}
		if most > 0 {
			b.Width = n * d.Chart.BarMax / most
		}
		if n > 0 && b.Width < 3 {
			b.Width = 3 // a status that has devices is never drawn as nothing
		}
		b.ValueX = d.Chart.BarX + b.Width + 10
		d.Bars = append(d.Bars, b)
	}
	d.Chart.Height = 12 + len(d.Bars)*44
	return s.render(w, r, status, viewReport, "Escrow report", "reports", d)
}

// problemLabel names why the report lists a device.
func problemLabel(p string) string {
	switch p {
	case escrow.ProblemFailed:
		return "Escrow failed"
	case escrow.ProblemMissingEscrow:
		return "Escrow missing"
	case escrow.ProblemPendingTooLong:
		return "Pending too long"
	}
	return p
}
