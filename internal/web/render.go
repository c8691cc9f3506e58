package web

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

//go:embed templates
var templateFS embed.FS

// view names a page template in templates/views. Handlers can only name views from this list,
// and parseViews parses every one at start, so a missing template stops the server at once.
type view string

const (
	viewError          view = "error"
	viewSignIn         view = "signin"
	viewSetup          view = "setup"
	viewDevices        view = "devices"
	viewDeviceOverview view = "device_overview"
	viewDeviceSecurity view = "device_security"
	viewRotateConfirm  view = "rotate_confirm"
	viewRetireConfirm  view = "retire_confirm"
	viewAudit          view = "audit"
	viewReport         view = "report"
	viewSettings       view = "settings"
	viewUsers          view = "users"
	viewTokens         view = "tokens"
	viewTokenCreated   view = "token_created"
	viewSelf           view = "self"
	viewSelfKey        view = "self_key"
	viewApprovals      view = "approvals"
)

var allViews = []view{viewError, viewSignIn, viewSetup, viewDevices, viewDeviceOverview, viewDeviceSecurity, viewRotateConfirm, viewRetireConfirm,
	viewAudit, viewReport, viewSettings, viewUsers, viewTokens, viewTokenCreated, viewSelf, viewSelfKey, viewApprovals}

// layout is what every page's frame needs; each view's data embeds it.
type layout struct {
	Title  string
	Nav    string  // the navigation entry to mark as current
	Me     *viewer // nil when signed out
	Notice string  // a confirmation to show at the top
	View   string  // the view's name, on the body element, for tests and styling
	// IncidentUntil is set on staff pages while incident mode is on: the banner says until when.
	IncidentUntil time.Time
}

func (l *layout) base() *layout { return l }

// viewData is the data of any view: something that embeds layout.
type viewData interface{ base() *layout }

// viewer is the signed-in person as the navigation needs them.
type viewer struct {
	Email      string
	Role       string
	Staff      bool
	CanAudit   bool
	CanReports bool
	CanAdmin   bool
	// Approvals shows the Approvals entry (two-person approval is on, or requests wait);
	// Pending is the number of requests the person could decide.
	Approvals bool
	Pending   int
}

func newViewer(p escrow.Principal) *viewer {
	if p.Actor.ID == "" {
		return nil
	}
	return &viewer{Email: p.Email, Role: roleLabel(p.Role), Staff: isStaff(p), CanAudit: p.CanReadAudit(),
		CanReports: p.CanReadReports(), CanAdmin: p.CanAdminister()}
}

// parseViews parses each view together with the layout and the partials, once.
func parseViews(a *assets) (map[view]*template.Template, error) {
	funcs := templateFuncs(a)
	out := map[view]*template.Template{}
	for _, v := range allViews {
		name := "templates/views/" + string(v) + ".html"
		if _, err := fs.Stat(templateFS, name); err != nil {
			return nil, fmt.Errorf("portal view %s: %w", v, err)
		}
		t, err := template.New(string(v)).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/partials/*.html", name)
		if err != nil {
			return nil, fmt.Errorf("portal view %s: %w", v, err)
		}
		if t.Lookup("content") == nil {
			return nil, fmt.Errorf("portal view %s: defines no content", v)
		}
		out[v] = t
	}
	return out, nil
}

// render writes the view with data inside the layout. It renders into a buffer first, so that
// a template error becomes an error page instead of half a page.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, v view, title, nav string, data viewData) error {
	t, ok := s.views[v]
	if !ok {
		return fmt.Errorf("no view %s", v)
	}
	b := data.base()
	b.Title, b.Nav, b.View = title, nav, string(v)
	if b.Me == nil {
		b.Me = newViewer(principal(r))
	}
	if b.Me != nil && b.Me.Staff {
		// Every staff page says when incident mode lifts a limit, so it is never on unnoticed.
		// Without the settings (storage down) the page goes out without the banner.
		if set, err := s.store.Settings(r.Context()); err == nil {
			if set.IncidentOn(s.cfg.Now()) {
				b.IncidentUntil = set.IncidentModeUntil
			}
			s.countApprovals(r, b.Me, set)
		}
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", data); err != nil {
		return fmt.Errorf("render %s: %w", v, err)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if _, err := w.Write(buf.Bytes()); err != nil {
		return errAborted
	}
	return nil
}

// countApprovals fills in the navigation's Approvals entry for admins and helpdesk: the
// requests waiting that the person could decide. Without the count (storage down) the entry
// goes out without it.
func (s *Server) countApprovals(r *http.Request, me *viewer, set escrow.Settings) {
	p := principal(r)
	if !p.CanTakePartInApprovals() {
		return
	}
	n, err := s.store.CountPendingApprovals(r.Context(), p.Scope(), p.Actor.Name)
	if err != nil {
		return
	}
	me.Approvals, me.Pending = set.ApprovalRequired || n > 0, n
}

func templateFuncs(a *assets) template.FuncMap {
	return template.FuncMap{
		"asset":       a.url,
		"statusLabel": statusLabel,
		"statusClass": func(s escrow.EscrowStatus) string { return "status-" + string(s) },
		"when":        formatTime,
		"whenShort":   formatShort,
		"whenSeconds": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") },
		"keyBlocks":   keyBlocks,
		"shortID":     func(s string) string { return shorten(s, 8) },
		"join":        strings.Join,
		"roleLabel":   roleLabel,
		"volumeType":  volumeTypeLabel,
		"protectors":  protectorSummary,
		"rotationStatus": func(s escrow.RotationStatus) string {
			return strings.ToUpper(string(s[:1])) + string(s[1:])
		},
		"triggerLabel": triggerLabel,
		"problemLabel": problemLabel,
	}
}

// statusLabel is the SPEC's display name of an escrow status.
func statusLabel(s escrow.EscrowStatus) string {
	switch s {
	case escrow.StatusEscrowed:
		return "Escrowed"
	case escrow.StatusPending:
		return "Pending"
	case escrow.StatusFailed:
		return "Failed"
	case escrow.StatusNotAvailable:
		return "Not Available"
	}
	return string(s)
}

func roleLabel(r escrow.Role) string {
	switch r {
	case escrow.RoleAdmin:
		return "Admin"
	case escrow.RoleHelpdesk:
		return "Helpdesk"
	case escrow.RoleAuditor:
		return "Auditor"
	case escrow.RoleUser:
		return "User"
	}
	return "no role"
}

func volumeTypeLabel(t escrow.VolumeType) string {
	switch t {
	case escrow.VolumeOperatingSystem:
		return "Operating system"
	case escrow.VolumeFixedData:
		return "Fixed data"
	case escrow.VolumeRemovable:
		return "Removable"
	}
	return string(t)
}

func triggerLabel(t string) string {
	switch t {
	case escrow.TriggerManual:
		return "Requested by a person"
	case escrow.TriggerDisclosure:
		return "After the key was viewed"
	case escrow.TriggerRecoveryUsed:
		return "Recovery password used at boot"
	case escrow.TriggerMaxKeyAge:
		return "Maximum key age"
	}
	return t
}

func protectorSummary(ps []escrow.Protector) string {
	if len(ps) == 0 {
		return "none reported"
	}
	names := make([]string, 0, len(ps))
	for _, p := range ps {
		names = append(names, string(p.Type))
	}
	return strings.Join(names, ", ")
}

// formatTime shows a time in UTC, which is what the audit trail and the API use.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

func formatShort(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04")
}

// keyBlocks splits a recovery password into its 8 blocks, so that each is read out on its
// own; a recovery key (64 hex digits) goes into 8 groups of 8.
func keyBlocks(material string) []string {
	if strings.Count(material, "-") == 7 {
		return strings.Split(material, "-")
	}
	var out []string
	for len(material) > 8 {
		out = append(out, material[:8])
		material = material[8:]
	}
	return append(out, material)
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
