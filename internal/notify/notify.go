// Package notify emails people about what the audit trail records: the owner of a device when
// someone else views its recovery keys, the approvers when someone asks to view a device's keys,
// and the requester when the request is approved or denied.
//
// A Notifier is a sink of the trail's delivery: it is handed the events in trail order and says
// how many of them it has dealt with, so a failed send is retried from the trail, never lost,
// and nothing on a request path waits for email. Emails never hold key material: they are
// built from audit events and device records, which hold none.
package notify

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// Directory is what the notifier reads besides the trail. *store.DB implements it.
type Directory interface {
	// DeviceRecord returns a device, retired or not. Errors: CodeNotFound, CodeUnavailable.
	DeviceRecord(ctx context.Context, id string) (escrow.Device, error)
	// UserByName returns the person with this sign-in name. Errors: CodeNotFound, CodeUnavailable.
	UserByName(ctx context.Context, name string) (escrow.User, error)
	// Approvers returns the enabled admins and helpdesk people. Errors: CodeUnavailable.
	Approvers(ctx context.Context) ([]escrow.User, error)
	// ListAudit calls fn for the events matching f, newest first. Errors: CodeUnavailable.
	ListAudit(ctx context.Context, f escrow.AuditFilter, fn func(escrow.AuditEvent) error) error
}

// Config is what a Notifier sends, where, and how it words it.
type Config struct {
	SMTP SMTP
	// PublicURL is where people reach the portal; the emails link to it ("" leaves links out).
	PublicURL string
	// Owners turns on the owners' emails. Approvers and requesters are always told.
	Owners bool
	// Zone is the time zone shown beside UTC (none beside it when nil or UTC).
	Zone *time.Location
	// MaxAge is the age past which an event gets no email (7 days if 0): news that old helps
	// nobody, and a trail delivered from its beginning must not mail its whole history.
	MaxAge time.Duration
	Log    *slog.Logger
	Now    func() time.Time
}

// Notifier turns audit events into emails.
type Notifier struct {
	cfg       Config
	dir       Directory
	mail      *mailer
	templates *template.Template

	mu sync.Mutex // one delivery at a time
	// The recipients already sent to for the event at seq sentSeq, which is not accepted yet:
	// after a failure part-way through an event's recipients, a retry sends only the rest.
	sentSeq int64
	sent    map[string]bool
}

// New checks the configuration and parses the templates. Errors name the setting at fault.
func New(cfg Config, dir Directory) (*Notifier, error) {
	m, err := newMailer(cfg.SMTP)
	if err != nil {
		return nil, err
	}
	if cfg.PublicURL != "" && !strings.HasPrefix(cfg.PublicURL, "https://") && !strings.HasPrefix(cfg.PublicURL, "http://") {
		return nil, fmt.Errorf("public URL %q: want http:// or https://", cfg.PublicURL)
	}
	cfg.PublicURL = strings.TrimSuffix(cfg.PublicURL, "/")
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 7 * 24 * time.Hour
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	n := &Notifier{cfg: cfg, dir: dir, mail: m}
	if n.templates, err = parseTemplates(templateFiles); err != nil {
		return nil, err
	}
	// Every template renders once now, so that a broken one stops the start and not a send.
	for _, kind := range []string{kindOwner, kindRequest, kindDecision} {
		if _, err := n.render(message{kind: kind, to: m.from.Address, data: emailData{Ticket: "x", WhenLocal: "x", Link: "x"}}, cfg.Now(), "check"); err != nil {
			return nil, fmt.Errorf("email templates: %w", err)
		}
	}
	return n, nil
}

// Name is the sink's name: the delivery cursor's key and the metrics label.
func (n *Notifier) Name() string { return "email" }

// StartsAtHead is true: turned on for an installation with a trail, email starts with the
// events after it, rather than telling owners of every view of the past days at once.
func (n *Notifier) StartsAtHead() bool { return true }

// Deliver sends the emails the events call for, in order, and returns how many events, from
// the first, are done with: every email of an event was accepted by the mail server, refused
// by it for good (5xx: logged, never retried), or needs no email. It stops at the first event
// it could not finish (the server unreachable or refusing for now, TLS, authentication, the
// store) and returns the error; the rest come again later.
func (n *Notifier) Deliver(ctx context.Context, events []escrow.AuditEvent) (int, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var views viewTracker
	if len(events) > 0 && (isRead(events[0]) || events[0].Action == escrow.ActionRotateRequest) {
		// The first events may continue a view that began in the batch before.
		before, err := n.eventsBefore(ctx, events[0].Seq)
		if err != nil {
			return 0, fmt.Errorf("email: %w", err)
		}
		for _, e := range before {
			views.next(e)
		}
	}
	var s *mailConn
	defer func() {
		if s != nil {
			s.close()
		}
	}()
	for i, e := range events {
		msgs, err := n.messages(ctx, e, views.next(e))
		if err != nil {
			return i, fmt.Errorf("email for event %d: %w", e.Seq, err)
		}
		for _, m := range msgs {
			if n.sentSeq == e.Seq && n.sent[m.to] {
				continue
			}
			msg, err := n.render(m, n.cfg.Now(), rand.Text())
			if err != nil {
				return i, fmt.Errorf("email for event %d: %w", e.Seq, err)
			}
			if s == nil {
				if s, err = n.mail.open(ctx); err != nil {
					return i, fmt.Errorf("email for event %d: %w", e.Seq, err)
				}
			}
			err = s.send(ctx, m.to, msg)
			var perr permanentError
			switch {
			case errors.As(err, &perr):
				n.cfg.Log.Error("email refused by the mail server; not sent again", slog.String("kind", m.kind),
					slog.Int64("seq", e.Seq), slog.String("to", m.to), slog.String("error", err.Error()))
			case err != nil:
				s.close()
				s = nil
				return i, fmt.Errorf("email for event %d: %w", e.Seq, err)
			default:
				n.cfg.Log.Info("email sent", slog.String("kind", m.kind), slog.Int64("seq", e.Seq), slog.String("to", m.to))
			}
			if n.sentSeq != e.Seq {
				n.sentSeq, n.sent = e.Seq, map[string]bool{}
			}
			n.sent[m.to] = true
		}
		n.sentSeq, n.sent = 0, nil
	}
	return len(events), nil
}

// viewLookback is how many events before a batch are read to find a view that began in the
// batch before: between two key.read events of one view stands at most the rotation request
// that the first read made.
const viewLookback = 2

// eventsBefore returns the events just before seq, in trail order.
func (n *Notifier) eventsBefore(ctx context.Context, seq int64) ([]escrow.AuditEvent, error) {
	var out []escrow.AuditEvent
	err := n.dir.ListAudit(ctx, escrow.AuditFilter{Before: seq, Limit: viewLookback}, func(e escrow.AuditEvent) error {
		out = append([]escrow.AuditEvent{e}, out...)
		return nil
	})
	return out, err
}

// isRead reports whether e disclosed a key: a key.read that succeeded and names the key.
func isRead(e escrow.AuditEvent) bool {
	return e.Action == escrow.ActionKeyRead && e.Outcome == escrow.OutcomeSuccess && e.KeyID != ""
}

// viewWindow bounds the time between the first and the last key.read of one view.
const viewWindow = time.Minute

// viewTracker finds the views among key.read events. One view of a device's keys records one
// key.read per key, in one transaction, so its events stand together in the trail, between
// them only the rotation requests the reads make (auto-rotation on disclosure), and they share
// the actor, source, address, user agent, reason and ticket. Such a run is one view and gets
// one email; any other event between two reads ends the view.
type viewTracker struct {
	last *escrow.AuditEvent // the last key.read of the view in progress
}

// next takes the next event of the trail and reports whether it continues the view before it.
func (v *viewTracker) next(e escrow.AuditEvent) bool {
	switch {
	case isRead(e):
		cont := v.last != nil && sameView(*v.last, e)
		v.last = &e
		return cont
	case v.last != nil && e.Action == escrow.ActionRotateRequest && e.DeviceID == v.last.DeviceID:
		return false
	default:
		v.last = nil
		return false
	}
}

func sameView(a, b escrow.AuditEvent) bool {
	return a.Actor == b.Actor && a.Source == b.Source && a.DeviceID == b.DeviceID && a.IP == b.IP &&
		a.UserAgent == b.UserAgent && a.Reason == b.Reason && a.Ticket == b.Ticket &&
		!b.Time.Before(a.Time) && b.Time.Sub(a.Time) <= viewWindow
}

// emailData is what the templates see. Every string is from text, so it is one line.
type emailData struct {
	Device    string // the device's name
	Owner     string // its owner's sign-in name
	When      string // the event's time in UTC
	WhenLocal string // and in the configured zone; "" without one
	Who       string // the actor's name
	Role      string // the actor's role; "" when they are no person Keyward knows
	Via       string // where they acted: the portal, the API
	Reason    string // the reason given (for a decision: the request's reason)
	Ticket    string // the ticket number, "" without one
	Approved  bool   // for a decision: approved, or denied
	Answer    string // for a denial: the reason the approver gave
	Link      string // the page to go to; "" without a public URL
	Seq       int64  // the event's number in the trail
}

// messages returns the emails e calls for; continues says e continues a view already mailed.
func (n *Notifier) messages(ctx context.Context, e escrow.AuditEvent, continues bool) ([]message, error) {
	interesting := isRead(e) && n.cfg.Owners && !continues ||
		e.Outcome == escrow.OutcomeSuccess && (e.Action == escrow.ActionKeyRequest || e.Action == escrow.ActionKeyApprove || e.Action == escrow.ActionKeyDeny)
	if !interesting {
		return nil, nil
	}
	if age := n.cfg.Now().Sub(e.Time); age > n.cfg.MaxAge {
		n.cfg.Log.Warn("event too old to be worth an email; none sent", slog.Int64("seq", e.Seq),
			slog.String("action", e.Action), slog.Duration("age", age))
		return nil, nil
	}
	d, err := n.dir.DeviceRecord(ctx, e.DeviceID)
	if escrow.ErrorCode(err) == escrow.CodeNotFound {
		n.cfg.Log.Warn("event of an unknown device; no email sent", slog.Int64("seq", e.Seq), slog.String("action", e.Action))
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	switch e.Action {
	case escrow.ActionKeyRead:
		return n.ownerMessage(ctx, e, d)
	case escrow.ActionKeyRequest:
		return n.requestMessages(ctx, e, d)
	default:
		return n.decisionMessage(ctx, e, d)
	}
}

// ownerMessage tells the device's owner that someone else viewed its keys; self-service views
// by the owner tell nobody.
func (n *Notifier) ownerMessage(ctx context.Context, e escrow.AuditEvent, d escrow.Device) ([]message, error) {
	if d.OwnerUPN == "" || escrow.SameName(e.Actor.Name, d.OwnerUPN) {
		return nil, nil
	}
	if !plainAddress(d.OwnerUPN) {
		n.cfg.Log.Warn("device owner has no email address; no email sent", slog.Int64("seq", e.Seq), slog.String("owner", text(d.OwnerUPN)))
		return nil, nil
	}
	data, err := n.describe(ctx, e, d, "/devices/"+d.ID)
	if err != nil {
		return nil, err
	}
	return []message{{kind: kindOwner, to: d.OwnerUPN, data: data}}, nil
}

// requestMessages asks every enabled admin and helpdesk person who may see the device, other
// than the requester, to approve or deny. Nobody outside the device's scope hears of it: the
// email names the device and the reason.
func (n *Notifier) requestMessages(ctx context.Context, e escrow.AuditEvent, d escrow.Device) ([]message, error) {
	approvers, err := n.dir.Approvers(ctx)
	if err != nil {
		return nil, err
	}
	data, err := n.describe(ctx, e, d, "/approvals")
	if err != nil {
		return nil, err
	}
	var out []message
	for _, u := range approvers {
		p := escrow.Principal{Role: u.Role, ScopeTags: u.ScopeTags}
		if escrow.SameName(u.Email, e.Actor.Name) || !plainAddress(u.Email) || !p.Scope().Allows(d) {
			continue
		}
		out = append(out, message{kind: kindRequest, to: u.Email, data: data})
	}
	return out, nil
}

// decisionMessage tells the requester the answer to their request.
func (n *Notifier) decisionMessage(ctx context.Context, e escrow.AuditEvent, d escrow.Device) ([]message, error) {
	req, found, err := n.findRequest(ctx, e)
	if err != nil {
		return nil, err
	}
	if !found {
		n.cfg.Log.Warn("answer to a request not found in the trail; no email sent", slog.Int64("seq", e.Seq), slog.String("detail", text(e.Detail)))
		return nil, nil
	}
	if !plainAddress(req.Actor.Name) {
		return nil, nil
	}
	data, err := n.describe(ctx, e, d, "/devices/"+d.ID)
	if err != nil {
		return nil, err
	}
	data.Approved = e.Action == escrow.ActionKeyApprove
	data.Reason, data.Ticket, data.Answer = text(req.Reason), text(req.Ticket), text(e.Reason)
	return []message{{kind: kindDecision, to: req.Actor.Name, data: data}}, nil
}

// requestWalk bounds the key.request events read back from an answer to find its request.
// Requests expire, so the one answered is among the last few.
const requestWalk = 1000

var errFound = errors.New("found")

// findRequest returns the key.request event that the answer e names.
func (n *Notifier) findRequest(ctx context.Context, e escrow.AuditEvent) (escrow.AuditEvent, bool, error) {
	id := requestID(e.Detail)
	if id == "" {
		return escrow.AuditEvent{}, false, nil
	}
	var req escrow.AuditEvent
	err := n.dir.ListAudit(ctx, escrow.AuditFilter{Action: escrow.ActionKeyRequest, Before: e.Seq, Limit: requestWalk}, func(r escrow.AuditEvent) error {
		if r.DeviceID == e.DeviceID && r.Outcome == escrow.OutcomeSuccess && requestID(r.Detail) == id {
			req = r
			return errFound
		}
		return nil
	})
	if errors.Is(err, errFound) {
		return req, true, nil
	}
	return escrow.AuditEvent{}, false, err
}

// requestID reads request=<id> from an event's detail.
func requestID(detail string) string {
	for _, f := range strings.FieldsFunc(detail, func(r rune) bool { return r == ' ' || r == ',' || r == ';' }) {
		if id, ok := strings.CutPrefix(f, "request="); ok {
			return id
		}
	}
	return ""
}

// describe fills in what every email says about an event: the device, when, who and why.
func (n *Notifier) describe(ctx context.Context, e escrow.AuditEvent, d escrow.Device, page string) (emailData, error) {
	data := emailData{Device: text(d.Name), Owner: text(d.OwnerUPN), Who: text(e.Actor.Name), Via: via(e),
		Reason: text(e.Reason), Ticket: text(e.Ticket), Seq: e.Seq}
	data.When, data.WhenLocal = n.when(e.Time)
	if n.cfg.PublicURL != "" {
		data.Link = n.cfg.PublicURL + page
	}
	u, err := n.dir.UserByName(ctx, e.Actor.Name)
	switch {
	case err == nil:
		data.Role = string(u.Role)
	case escrow.ErrorCode(err) != escrow.CodeNotFound:
		return data, err
	}
	return data, nil
}

// when formats t in UTC and in the configured zone.
func (n *Notifier) when(t time.Time) (utc, local string) {
	const layout = "Monday 2 January 2006, 15:04:05"
	utc = t.UTC().Format(layout) + " UTC"
	if z := n.cfg.Zone; z != nil && z != time.UTC && z.String() != "UTC" {
		local = t.In(z).Format(layout + " MST")
		if name := z.String(); name != "Local" {
			local += " (" + name + ")"
		}
	}
	return utc, local
}

// via says in words where the actor acted.
func via(e escrow.AuditEvent) string {
	var s string
	switch e.Source {
	case escrow.SourceAdminPortal:
		s = "the Keyward portal"
	case escrow.SourceSelfService:
		s = "the self-service portal"
	case escrow.SourceAPI:
		s = "the Keyward API"
	case escrow.SourceCLI:
		s = "the keyward command"
	default:
		s = text(string(e.Source))
	}
	if e.Actor.Type == escrow.ActorToken {
		s += ", with an API token"
	}
	return s
}
