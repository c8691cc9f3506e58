package notify_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // Europe/Paris whatever the machine has installed

	"github.com/google/uuid"

	"github.com/keyward/keyward/internal/api"
	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/notify"
	"github.com/keyward/keyward/internal/notify/smtptest"
	"github.com/keyward/keyward/internal/recovery"
	"github.com/keyward/keyward/internal/seal"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/testkit"
)

// env is a real API server on a real SQLite file, a real SMTP server, and a notifier that
// reads the store as cmd/keyward wires it.
type env struct {
	t         *testing.T
	ctx       context.Context
	clock     *testkit.Clock
	db        *store.DB
	api       *httptest.Server
	mail      *smtptest.Server
	logs      *testkit.Buffer
	admin     string   // an admin's API token
	passwords []string // every recovery password escrowed
}

var systemOrigin = escrow.Origin{Actor: escrow.Actor{Type: escrow.ActorSystem, ID: "test"}, Source: escrow.SourceCLI}

func newEnv(t *testing.T, configure func(*smtptest.Server)) *env {
	t.Helper()
	master, err := seal.Generate()
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := seal.New(master)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ctx: t.Context(), clock: testkit.NewClock(time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)), logs: &testkit.Buffer{}}
	e.db, err = store.OpenSQLite(e.ctx, t.TempDir(), store.Options{Sealer: sealer, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.api = httptest.NewServer(api.New(e.db, slog.New(slog.NewJSONHandler(io.Discard, nil))).Handler())
	t.Cleanup(func() {
		e.api.Close()
		e.db.Close()
	})
	e.mail = smtptest.Start(t, configure)
	e.admin = e.person(escrow.RoleAdmin, "admin@example.com")
	return e
}

// config is the notifier's configuration for the test's mail server.
func (e *env) config() notify.Config {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		e.t.Fatal(err)
	}
	return notify.Config{
		SMTP: notify.SMTP{Server: e.mail.Addr, TLS: notify.TLSStartTLS, Username: e.mail.User, Password: e.mail.Pass,
			From: "Keyward <keyward@example.com>", RootCAs: e.mail.CA.Pool, Timeout: 5 * time.Second},
		PublicURL: "https://keyward.example.com/", Owners: true, Zone: paris,
		Log: slog.New(slog.NewJSONHandler(e.logs, nil)), Now: e.clock.Now,
	}
}

func (e *env) notifier(change func(*notify.Config)) *notify.Notifier {
	e.t.Helper()
	cfg := e.config()
	if change != nil {
		change(&cfg)
	}
	n, err := notify.New(cfg, e.db)
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// person creates a user with the role and returns an API token for them.
func (e *env) person(role escrow.Role, email string, scopeTags ...string) string {
	e.t.Helper()
	if _, err := e.db.CreateUser(e.ctx, systemOrigin, escrow.NewUser{Email: email, Role: role, ScopeTags: scopeTags}); err != nil {
		e.t.Fatal(err)
	}
	tok, err := e.db.CreateAPIToken(e.ctx, systemOrigin, email, "test")
	if err != nil {
		e.t.Fatal(err)
	}
	return tok.String()
}

func (e *env) do(method, path, token string, body any) (int, []byte) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(e.ctx, method, e.api.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := e.api.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return res.StatusCode, b
}

func (e *env) must(want int, method, path, token string, body any, out any) {
	e.t.Helper()
	status, b := e.do(method, path, token, body)
	if status != want {
		e.t.Fatalf("%s %s: %d, want %d: %s", method, path, status, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			e.t.Fatal(err)
		}
	}
}

// enroll enrolls a device through the API and escrows one recovery password per volume.
func (e *env) enroll(hostname, owner string, volumes ...string) string {
	e.t.Helper()
	var tok struct{ Token string }
	e.must(201, "POST", "/api/enrollment-tokens", e.admin, map[string]any{"uses": 1}, &tok)
	var d struct{ DeviceID, DeviceToken string }
	e.must(201, "POST", "/api/agent/enroll", "", map[string]any{
		"enrollmentToken": tok.Token, "hostname": hostname, "serialNumber": "SN-" + hostname, "osVersion": "10.0.26100", "ownerUpn": owner,
	}, &d)
	for i, v := range volumes {
		pw, err := recovery.GeneratePassword(rand.Reader)
		if err != nil {
			e.t.Fatal(err)
		}
		e.passwords = append(e.passwords, pw)
		kind := "operatingSystem"
		if i > 0 {
			kind = "fixedData"
		}
		e.must(201, "PUT", "/api/agent/keys/"+strings.ToUpper(uuid.NewString()), d.DeviceToken, map[string]any{
			"volumeId": v, "mountPoint": v + ":", "volumeType": kind, "kind": "recoveryPassword", "recoveryPassword": pw}, nil)
	}
	return d.DeviceID
}

// view views a device's keys through the API, as the helpdesk does, and checks that the
// answer holds the material.
func (e *env) view(token, deviceID, reason string) {
	e.t.Helper()
	e.clock.Advance(time.Minute)
	var out struct {
		Keys []struct{ RecoveryPassword string }
	}
	e.must(200, "GET", "/api/devices/security/bitlocker/keys/"+deviceID+"?reason="+url.QueryEscape(reason), token, nil, &out)
	if len(out.Keys) == 0 || out.Keys[0].RecoveryPassword == "" {
		e.t.Fatalf("the view disclosed nothing: %+v", out)
	}
}

// trail returns the audit events after seq, in trail order, as the delivery hands them over.
func (e *env) trail(after int64) []escrow.AuditEvent {
	e.t.Helper()
	var out []escrow.AuditEvent
	if err := e.db.ListAudit(e.ctx, escrow.AuditFilter{}, func(ev escrow.AuditEvent) error {
		if ev.Seq > after {
			out = append(out, ev)
		}
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
	slices.Reverse(out)
	return out
}

// deliverAll hands events to the sink as the delivery does and wants every one accepted.
func deliverAll(t *testing.T, n *notify.Notifier, events []escrow.AuditEvent) {
	t.Helper()
	got, err := n.Deliver(t.Context(), events)
	if err != nil || got != len(events) {
		t.Fatalf("Deliver accepted %d of %d: %v", got, len(events), err)
	}
}

// noKeyMaterial fails if any recovery password, or any block of one, is in what the mail
// server received.
func (e *env) noKeyMaterial() {
	e.t.Helper()
	traffic := e.mail.Traffic.String()
	if traffic == "" {
		e.t.Fatal("the mail server recorded no traffic")
	}
	for _, pw := range e.passwords {
		if strings.Contains(traffic, pw) || strings.Contains(traffic, strings.ReplaceAll(pw, "-", "")) {
			e.t.Fatal("a recovery password reached the mail server")
		}
		for block := range strings.SplitSeq(pw, "-") {
			if strings.Contains(traffic, block) {
				e.t.Fatalf("block %s of a recovery password reached the mail server", block)
			}
		}
	}
}

func countAction(events []escrow.AuditEvent, action string) int {
	n := 0
	for _, ev := range events {
		if ev.Action == action {
			n++
		}
	}
	return n
}

func TestOwnerNotification(t *testing.T) {
	e := newEnv(t, nil)
	helpdesk := e.person(escrow.RoleHelpdesk, "bob@example.com")
	alice := e.person(escrow.RoleUser, "alice@example.com")
	id := e.enroll("LT-ALICE", "Alice@Example.com", "C", "D")

	e.view(helpdesk, id, "user locked out after a BIOS update")
	readAt := e.clock.Now()
	e.view(alice, id, "my own laptop") // self-service: nobody is told
	events := e.trail(0)
	if n := countAction(events, escrow.ActionKeyRead); n != 4 {
		t.Fatalf("%d key.read events, want 4 (two keys, two views)", n)
	}

	deliverAll(t, e.notifier(nil), events)

	mails := e.mail.Received()
	if len(mails) != 1 {
		t.Fatalf("%d emails, want 1 (one view by someone else, however many keys): %+v", len(mails), mails)
	}
	got := mails[0]
	if !slices.Equal(got.To, []string{"alice@example.com"}) || got.From != "keyward@example.com" || !got.TLS || got.Authed != "keyward" {
		t.Errorf("sent to %v from %q, TLS %v, authenticated as %q", got.To, got.From, got.TLS, got.Authed)
	}
	m, body := got.Parse(t)
	for name, want := range map[string]string{
		"From": `"Keyward" <keyward@example.com>`, "To": "<alice@example.com>", "Subject": "Keyward: the recovery keys of LT-ALICE were viewed",
		"Mime-Version": "1.0", "Content-Type": "text/plain; charset=utf-8", "Content-Transfer-Encoding": "quoted-printable",
		"Auto-Submitted": "auto-generated",
	} {
		if v := m.Header.Get(name); v != want {
			t.Errorf("%s: %q, want %q", name, v, want)
		}
	}
	if d, err := m.Header.Date(); err != nil || !d.Equal(e.clock.Now().Truncate(time.Second)) {
		t.Errorf("Date: %v, %v", d, err)
	}
	if id := m.Header.Get("Message-Id"); !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@example.com>") {
		t.Errorf("Message-ID %q", id)
	}
	for _, want := range []string{
		"LT-ALICE",
		"When:    Wednesday 25 November 2026, 09:01:00 UTC", // readAt
		"Wednesday 25 November 2026, 10:01:00 CET (Europe/Paris)",
		"Who:     bob@example.com (helpdesk), through the Keyward API, with an API token",
		"Reason:  user locked out after a BIOS update",
		"https://keyward.example.com/devices/" + id,
		"tell your IT security team",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the email lacks %q:\n%s", want, body)
		}
	}
	if readAt.Format("15:04:05") != "09:01:00" {
		t.Fatalf("the test's clock moved: %v", readAt)
	}
	if strings.Contains(body, "Ticket:") {
		t.Errorf("a ticket line without a ticket:\n%s", body)
	}
	e.noKeyMaterial()
}

// A view whose key.read events are split between two deliveries still gets one email.
func TestOwnerNotificationViewAcrossBatches(t *testing.T) {
	e := newEnv(t, nil)
	helpdesk := e.person(escrow.RoleHelpdesk, "bob@example.com")
	id := e.enroll("LT-SPLIT", "alice@example.com", "C", "D", "E")
	e.view(helpdesk, id, "split")
	events := e.trail(0)
	first := slices.IndexFunc(events, func(ev escrow.AuditEvent) bool { return ev.Action == escrow.ActionKeyRead })

	n := e.notifier(nil)
	deliverAll(t, n, events[:first+1])
	if got := len(e.mail.Received()); got != 1 {
		t.Fatalf("%d emails after the first read, want 1", got)
	}
	// The rest, one event at a time (the batch boundary after each), and again by a
	// notifier that starts afresh, as after a restart.
	for i := first + 1; i < len(events); i++ {
		deliverAll(t, n, events[i:i+1])
	}
	deliverAll(t, e.notifier(nil), events[first+1:])
	if got := len(e.mail.Received()); got != 1 {
		t.Errorf("%d emails for one view of three keys, want 1", got)
	}
	// A second view, a minute later, is another email.
	e.view(helpdesk, id, "again")
	deliverAll(t, n, e.trail(events[len(events)-1].Seq))
	if got := len(e.mail.Received()); got != 2 {
		t.Errorf("%d emails after a second view, want 2", got)
	}
}

// A mail server that is down or refuses for now gets the email later, exactly once, and the
// delivery stops at the event it could not finish.
func TestOwnerNotificationRetried(t *testing.T) {
	e := newEnv(t, nil)
	helpdesk := e.person(escrow.RoleHelpdesk, "bob@example.com")
	id := e.enroll("LT-RETRY", "alice@example.com", "C")
	e.view(helpdesk, id, "first")
	e.view(helpdesk, id, "second")
	events := e.trail(0)
	reads := []int{}
	for i, ev := range events {
		if ev.Action == escrow.ActionKeyRead {
			reads = append(reads, i)
		}
	}
	n := e.notifier(func(c *notify.Config) { c.SMTP.Timeout = 2 * time.Second })

	// Down: nothing from the first read on is accepted.
	e.mail.Stop()
	got, err := n.Deliver(e.ctx, events)
	if err == nil || got != reads[0] {
		t.Fatalf("with the server down Deliver accepted %d (%v), want %d and an error", got, err, reads[0])
	}
	e.mail.Restart()

	// Refusing for now (451 on DATA): the first email goes, the second waits.
	e.mail.FailData(1)
	rest := events[got:]
	got, err = n.Deliver(e.ctx, rest)
	if err == nil || got != 0 || !strings.Contains(err.Error(), "451") {
		t.Fatalf("with DATA refused Deliver accepted %d (%v), want 0 and the 451", got, err)
	}
	deliverAll(t, n, rest)
	mails := e.mail.To("alice@example.com")
	if len(mails) != 2 {
		t.Fatalf("%d emails, want 2 (one per view, each once)", len(mails))
	}
	for i, reason := range []string{"first", "second"} {
		if _, body := mails[i].Parse(t); !strings.Contains(body, "Reason:  "+reason) {
			t.Errorf("email %d is not about the %s view:\n%s", i, reason, body)
		}
	}

	// Refused for good (550): logged and passed, so the trail behind it is not held up.
	e.view(helpdesk, id, "third")
	e.mail.Refuse("alice@example.com", smtptest.Error550)
	deliverAll(t, n, e.trail(events[len(events)-1].Seq))
	if len(e.mail.Received()) != 2 || !strings.Contains(e.logs.String(), "refused by the mail server") {
		t.Errorf("a permanent refusal: %d emails, logs %s", len(e.mail.Received()), e.logs.String())
	}
	e.noKeyMaterial()
}

// Names and reasons from the trail can hold CR and LF; none of them makes a header.
func TestNoHeaderInjection(t *testing.T) {
	e := newEnv(t, nil)
	id := e.enroll("LT-INJECT", "alice@example.com", "C")
	hostile := []string{
		"locked out\r\nBcc: mallory@evil.example",
		"x\r\n\r\nForged body\r\n.\r\nMAIL FROM:<mallory@evil.example>",
		"\nSubject: forged",
		"tab\tand\u2028line separator\u202eRTL",
	}
	var events []escrow.AuditEvent
	for i, h := range hostile {
		events = append(events, escrow.AuditEvent{Seq: int64(1000 + 2*i), Time: e.clock.Now(), Action: escrow.ActionKeyRead,
			Outcome: escrow.OutcomeSuccess, DeviceID: id, KeyID: "K", Source: escrow.SourceAPI, Reason: h,
			Actor: escrow.Actor{Type: escrow.ActorUser, Name: "bob@example.com\r\nBcc: mallory@evil.example" + h}})
		// Each view its own: another event between them.
		events = append(events, escrow.AuditEvent{Seq: int64(1001 + 2*i), Time: e.clock.Now(), Action: escrow.ActionDeviceRead})
	}
	deliverAll(t, e.notifier(nil), events)

	mails := e.mail.Received()
	if len(mails) != len(hostile) {
		t.Fatalf("%d emails, want %d", len(mails), len(hostile))
	}
	want := []string{"Auto-Submitted", "Content-Transfer-Encoding", "Content-Type", "Date", "From", "Message-Id", "Mime-Version", "Subject", "To"}
	for i, got := range mails {
		if !slices.Equal(got.To, []string{"alice@example.com"}) {
			t.Errorf("email %d went to %v", i, got.To)
		}
		m, body := got.Parse(t)
		var names []string
		for name := range m.Header {
			names = append(names, name)
		}
		slices.Sort(names)
		if !slices.Equal(names, want) {
			t.Errorf("email %d headers %v, want %v", i, names, want)
		}
		for line := range strings.SplitSeq(body, "\n") {
			if strings.HasPrefix(line, "Bcc:") || strings.HasPrefix(line, "Subject:") || strings.HasPrefix(line, "Forged") {
				t.Errorf("email %d: a line of the body came from the trail: %q", i, line)
			}
		}
		if !strings.Contains(body, `\u{A}`) && !strings.Contains(body, `\u{2028}`) {
			t.Errorf("email %d shows no escaped line break:\n%s", i, body)
		}
	}
	if strings.Contains(e.mail.Traffic.String(), "RCPT TO:<mallory") {
		t.Error("a recipient came from the trail")
	}
}

func TestApproverEmails(t *testing.T) {
	e := newEnv(t, nil)
	e.person(escrow.RoleHelpdesk, "bob@example.com")            // asks
	e.person(escrow.RoleAdmin, "carol@example.com")             // told, approves
	e.person(escrow.RoleHelpdesk, "dave@example.com", "london") // outside the device's scope
	e.person(escrow.RoleHelpdesk, "erin@example.com", "paris")  // told, denies
	e.person(escrow.RoleAuditor, "audrey@example.com")          // may not approve
	e.person(escrow.RoleHelpdesk, "frank@example.com")          // disabled
	u, err := e.db.UserByName(e.ctx, "frank@example.com")
	if err != nil {
		t.Fatal(err)
	}
	yes := true
	if _, err := e.db.UpdateUser(e.ctx, systemOrigin, u.ID, escrow.UserChange{Disabled: &yes}); err != nil {
		t.Fatal(err)
	}
	id := e.enroll("LT-PARIS", "alice@example.com", "C")
	tags := []string{"paris"}
	if _, err := e.db.UpdateDevice(e.ctx, systemOrigin, id, escrow.DeviceChange{Tags: &tags}); err != nil {
		t.Fatal(err)
	}
	start := e.trail(0)
	n := e.notifier(nil)
	deliverAll(t, n, start)

	record := func(actor, action, detail, reason string) {
		t.Helper()
		e.clock.Advance(time.Minute)
		ev := escrow.Origin{Actor: escrow.Actor{Type: escrow.ActorUser, Name: actor}, Source: escrow.SourceAdminPortal}.Event(action, escrow.OutcomeSuccess)
		ev.DeviceID, ev.Detail, ev.Reason = id, detail, reason
		if err := e.db.Record(e.ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	record("bob@example.com", "key.request", "request=r1", "user locked out")
	record("bob@example.com", "key.request", "request=r2", "second laptop")
	record("carol@example.com", "key.approve", "request=r1", "")
	record("erin@example.com", "key.deny", "request=r2", "no ticket given")

	// erin's server refuses her for now: carol is told, erin on the retry, each once.
	e.mail.Refuse("erin@example.com", smtptest.Error451)
	events := e.trail(start[len(start)-1].Seq)
	got, err := n.Deliver(e.ctx, events)
	if err == nil || got != 0 {
		t.Fatalf("with one approver refused for now Deliver accepted %d (%v), want 0 and an error", got, err)
	}
	e.mail.Accept("erin@example.com")
	deliverAll(t, n, events)

	for addr, want := range map[string]int{"carol@example.com": 2, "erin@example.com": 2, "bob@example.com": 2,
		"dave@example.com": 0, "audrey@example.com": 0, "frank@example.com": 0, "alice@example.com": 0, "admin@example.com": 2} {
		if got := len(e.mail.To(addr)); got != want {
			t.Errorf("%s got %d emails, want %d", addr, got, want)
		}
	}
	m, body := e.mail.To("carol@example.com")[0].Parse(t)
	if s := m.Header.Get("Subject"); s != "Keyward: approval asked to view the recovery keys of LT-PARIS" {
		t.Errorf("subject %q", s)
	}
	for _, want := range []string{"bob@example.com (helpdesk) asks to view", "Owner:   alice@example.com", "Reason:  user locked out",
		"https://keyward.example.com/approvals"} {
		if !strings.Contains(body, want) {
			t.Errorf("the request email lacks %q:\n%s", want, body)
		}
	}
	answers := e.mail.To("bob@example.com")
	m, body = answers[0].Parse(t)
	if s := m.Header.Get("Subject"); s != "Keyward: your request for the recovery keys of LT-PARIS was approved" {
		t.Errorf("subject %q", s)
	}
	for _, want := range []string{"carol@example.com (admin) approved your request", "Request: user locked out", "https://keyward.example.com/devices/" + id} {
		if !strings.Contains(body, want) {
			t.Errorf("the approval email lacks %q:\n%s", want, body)
		}
	}
	m, body = answers[1].Parse(t)
	if s := m.Header.Get("Subject"); s != "Keyward: your request for the recovery keys of LT-PARIS was denied" {
		t.Errorf("subject %q", s)
	}
	for _, want := range []string{"erin@example.com (helpdesk) denied your request", "Because: no ticket given", "Request: second laptop"} {
		if !strings.Contains(body, want) {
			t.Errorf("the denial email lacks %q:\n%s", want, body)
		}
	}
}

// Turning email on for an installation with a long trail does not mail its history, and
// owners can be left out.
func TestOldEventsAndOwnersOff(t *testing.T) {
	e := newEnv(t, nil)
	helpdesk := e.person(escrow.RoleHelpdesk, "bob@example.com")
	id := e.enroll("LT-OLD", "alice@example.com", "C")
	e.view(helpdesk, id, "long ago")
	old := e.trail(0)
	e.clock.Advance(8 * 24 * time.Hour)
	deliverAll(t, e.notifier(nil), old)
	if len(e.mail.Received()) != 0 || !strings.Contains(e.logs.String(), "too old") {
		t.Errorf("an event 8 days old was mailed (%d) or not logged", len(e.mail.Received()))
	}
	e.view(helpdesk, id, "now")
	deliverAll(t, e.notifier(func(c *notify.Config) { c.Owners = false }), e.trail(old[len(old)-1].Seq))
	if len(e.mail.Received()) != 0 {
		t.Errorf("owners off, yet %d emails", len(e.mail.Received()))
	}
}
