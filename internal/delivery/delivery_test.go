package delivery_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/seal"
	"github.com/keyward/keyward/internal/store"
)

func event(seq int64) escrow.AuditEvent {
	return escrow.AuditEvent{Seq: seq, Time: time.Date(2026, 12, 1, 9, 30, 0, 123456000, time.UTC),
		Actor: escrow.Actor{Type: escrow.ActorUser, ID: "u-1", Name: "helpdesk@example.com"}, Action: escrow.ActionKeyRead,
		DeviceID: "d-1", KeyID: "K-1", Source: escrow.SourceAPI, Reason: "INC0001", Outcome: escrow.OutcomeSuccess,
		IP: "192.0.2.1", UserAgent: "curl/8", Detail: "", Hash: []byte{0xab, 0xcd}}
}

// sdElement is the grammar of the one structured-data element (RFC 5424 §6.3): PARAM-VALUEs
// hold no '"', '\' or ']' unless escaped by a backslash.
var sdElement = regexp.MustCompile(`^<\d{1,3}>1 \S+ \S+ \S+ - \S+ \[keyward@32473(?: [A-Za-z]{1,32}="(?:[^"\\\]]|\\["\\\]])*")*\] \x{FEFF}`)

func TestSyslogFormat(t *testing.T) {
	s, err := delivery.NewSyslog(delivery.SyslogConfig{URL: "tcp://127.0.0.1:514", Hostname: "kw1", Facility: "local4"})
	if err != nil {
		t.Fatal(err)
	}
	got := string(s.Format(event(7)))
	want := `<165>1 2026-12-01T09:30:00.123456Z kw1 keyward - key.read [keyward@32473 seq="7" hash="abcd" time="2026-12-01T09:30:00.123456Z" ` +
		`actorType="user" actorId="u-1" actorName="helpdesk@example.com" action="key.read" deviceId="d-1" keyId="K-1" source="api" ` +
		`reason="INC0001" outcome="success" ip="192.0.2.1" userAgent="curl/8"] ` + "\uFEFF" + `key.read success by helpdesk@example.com`
	if got != want {
		t.Fatalf("Format:\n%s\nwant\n%s", got, want)
	}

	huge := strings.Repeat("é]\"\\", 50000)
	tests := []struct {
		name      string
		edit      func(*escrow.AuditEvent)
		contains  string
		truncated string
	}{
		{"quotes, backslash, bracket", func(e *escrow.AuditEvent) { e.Reason = `a "b" \c] d` }, `reason="a \"b\" \\c\] d"`, ""},
		{"line breaks and control characters", func(e *escrow.AuditEvent) { e.Detail = "x\ny\r\x00z" }, `detail="x\\u{A}y\\u{D}\\u{0}z"`, ""},
		{"invalid UTF-8", func(e *escrow.AuditEvent) { e.UserAgent = "a\xffb" }, `userAgent="a\\xFFb"`, ""},
		{"bidirectional override", func(e *escrow.AuditEvent) { e.Actor.Name = "a\u202eb" }, `actorName="a\\u{202E}b"`, ""},
		{"huge detail", func(e *escrow.AuditEvent) { e.Detail = huge }, `detail="é\]\"\\`, "detail"},
		{"every field huge", func(e *escrow.AuditEvent) {
			e.Actor.ID, e.Actor.Name, e.DeviceID, e.KeyID, e.Reason, e.IP, e.UserAgent, e.Detail = huge, huge, huge, huge, huge, huge, huge, huge
			e.Action = strings.Repeat("a", 100)
		}, ` truncated="actorId,actorName,action,deviceId,keyId,reason,ip,userAgent,detail"]`, "all"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := event(1)
			tt.edit(&e)
			msg := s.Format(e)
			if !utf8.Valid(msg) {
				t.Fatal("message is not valid UTF-8")
			}
			if len(msg) > delivery.MaxMessage {
				t.Fatalf("message is %d octets", len(msg))
			}
			if !sdElement.Match(msg) {
				t.Fatalf("not one well-formed SD element: %.300s", msg)
			}
			if !strings.Contains(string(msg), tt.contains) {
				t.Fatalf("message lacks %s: %.400s", tt.contains, msg)
			}
			if (tt.truncated != "") != strings.Contains(string(msg), ` truncated="`) {
				t.Fatalf("truncation mark: %.400s", msg)
			}
		})
	}
}

func TestNewSyslogRefuses(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []delivery.SyslogConfig{
		{URL: "udp://127.0.0.1:514"},
		{URL: "tcp://127.0.0.1"},
		{URL: "127.0.0.1:514"},
		{URL: "tcp://user@127.0.0.1:514"},
		{URL: "tcp://127.0.0.1:514/path"},
		{URL: "tcp://127.0.0.1:514", CAFile: notPEM},
		{URL: "tls://127.0.0.1:514", CAFile: notPEM},
		{URL: "tls://127.0.0.1:514", CAFile: filepath.Join(dir, "missing.pem")},
		{URL: "tls://127.0.0.1:514", CertFile: notPEM},
		{URL: "tcp://127.0.0.1:514", Facility: "local8"},
		{URL: "tcp://127.0.0.1:514", Facility: "24"},
		{URL: "tcp://127.0.0.1:514", AppName: "\u00e9\u00e9"},
	} {
		if _, err := delivery.NewSyslog(cfg); err == nil {
			t.Errorf("NewSyslog(%+v) accepted", cfg)
		}
	}
	for name, want := range map[string]int{"": 4, "auth": 4, "AUTHPRIV": 10, "local0": 16, "local7": 23, "3": 3} {
		if got, err := delivery.ParseFacility(name); err != nil || got != want {
			t.Errorf("ParseFacility(%q) = %d, %v; want %d", name, got, err, want)
		}
	}
}

// TestSyslogVerifiesTheReceiver: over TLS a receiver whose certificate the pool does not
// trust gets nothing.
func TestSyslogVerifiesTheReceiver(t *testing.T) {
	var mu sync.Mutex
	got := 0
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { mu.Lock(); got++; mu.Unlock() }))
	defer srv.Close()
	s, err := delivery.NewSyslog(delivery.SyslogConfig{URL: "tls://" + srv.Listener.Addr().String(), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n, err := s.Deliver(t.Context(), []escrow.AuditEvent{event(1)})
	if n != 0 || err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Deliver to an untrusted receiver: %d, %v", n, err)
	}
}

func TestWebhookSignature(t *testing.T) {
	secret := []byte(strings.Repeat("s", delivery.MinSecret))
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"seq":1}` + "\n")
	h := delivery.Sign(secret, now, body)
	if !regexp.MustCompile(`^t=1800000000,v1=[0-9a-f]{64}$`).MatchString(h) {
		t.Fatalf("header %q", h)
	}
	if err := delivery.Verify(secret, h, body, now.Add(time.Minute), 5*time.Minute); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	for name, tc := range map[string]struct {
		secret []byte
		header string
		body   []byte
		now    time.Time
	}{
		"other body":      {secret, h, []byte(`{"seq":2}` + "\n"), now},
		"other secret":    {[]byte(strings.Repeat("t", delivery.MinSecret)), h, body, now},
		"replayed later":  {secret, h, body, now.Add(6 * time.Minute)},
		"other timestamp": {secret, strings.Replace(h, "t=1800000000", "t=1800000001", 1), body, now},
		"no timestamp":    {secret, h[strings.Index(h, ",")+1:], body, now},
		"no signature":    {secret, "t=1800000000", body, now},
		"short signature": {secret, h[:len(h)-2], body, now},
		"empty":           {secret, "", body, now},
	} {
		if err := delivery.Verify(tc.secret, tc.header, tc.body, tc.now, 5*time.Minute); err == nil {
			t.Errorf("%s: verified", name)
		}
	}
}

func TestNewWebhookRefuses(t *testing.T) {
	secret := []byte(strings.Repeat("s", delivery.MinSecret))
	for _, cfg := range []delivery.WebhookConfig{
		{URL: "http://siem.example.com/in", Secret: secret},
		{URL: "https://user:pw@siem.example.com/in", Secret: secret},
		{URL: "siem.example.com", Secret: secret},
		{URL: "https://siem.example.com/in", Secret: secret[:delivery.MinSecret-1]},
	} {
		if _, err := delivery.NewWebhook(cfg); err == nil {
			t.Errorf("NewWebhook(%s, %d-byte secret) accepted", cfg.URL, len(cfg.Secret))
		}
	}
	dir := t.TempDir()
	short, good := filepath.Join(dir, "short"), filepath.Join(dir, "good")
	if err := os.WriteFile(short, []byte(strings.Repeat("x", delivery.MinSecret-1)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(good, append(secret, "\r\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := delivery.ReadSecretFile(short); err == nil {
		t.Error("a short secret was accepted")
	}
	if got, err := delivery.ReadSecretFile(good); err != nil || string(got) != string(secret) {
		t.Errorf("ReadSecretFile: %q %v", got, err)
	}
}

// recorder is a sink that accepts what its script says, one answer per call, and keeps what it
// accepted.
type recorder struct {
	mu     sync.Mutex
	script []func(n int) (int, error) // per call: how many to accept of n; then all
	got    []int64
	calls  int
}

func (r *recorder) Name() string { return "syslog" }

func (r *recorder) Deliver(_ context.Context, events []escrow.AuditEvent) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	accepted, err := len(events), error(nil)
	if r.calls < len(r.script) {
		accepted, err = r.script[r.calls](len(events))
	}
	r.calls++
	for _, e := range events[:accepted] {
		r.got = append(r.got, e.Seq)
	}
	return accepted, err
}

func (r *recorder) seqs() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int64(nil), r.got...)
}

// TestRunnerResumesAfterFailures: a sink that fails, then takes part of a batch, then all,
// ends up with every event of the trail once and in order, in bounded batches, and a new
// runner on the same database (a restart) goes on from the stored cursor.
func TestRunnerResumesAfterFailures(t *testing.T) {
	master, err := seal.Generate()
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := seal.New(master)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	dir := t.TempDir()
	db, err := store.OpenSQLite(ctx, dir, store.Options{Sealer: sealer})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	record := func(n int) {
		for range n {
			if err := db.Record(ctx, escrow.AuditEvent{Action: escrow.ActionAuth, Outcome: escrow.OutcomeDenied, Source: escrow.SourceAPI}); err != nil {
				t.Fatal(err)
			}
		}
	}
	record(12)
	down := errors.New("receiver down")
	sink := &recorder{script: []func(int) (int, error){
		func(int) (int, error) { return 0, down },
		func(int) (int, error) { return 2, down },
		func(int) (int, error) { return 1, nil }, // short without an error counts as a failure
	}}
	opts := delivery.Options{BatchSize: 5, Poll: 20 * time.Millisecond, MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}
	run := func() (stop func()) {
		r, err := delivery.NewRunner(db, []delivery.Sink{sink}, opts)
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { r.Run(rctx); close(done) }()
		return func() { cancel(); <-done }
	}
	wait := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); len(sink.seqs()) < n; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("sink has %v, want %d events", sink.seqs(), n)
			}
		}
	}
	stop := run()
	wait(12)
	stop()
	record(3)
	stop = run()
	wait(15)
	stop()
	got := sink.seqs()
	for i, seq := range got {
		if seq != int64(i+1) {
			t.Fatalf("sink received %v: want 1 to 15 once each, in order", got)
		}
	}
	if len(got) != 15 {
		t.Fatalf("sink received %v", got)
	}
	st, err := db.DeliveryStates(ctx, []string{"syslog"})
	if err != nil || st[0].Cursor != 15 || !st[0].FailingSince.IsZero() || st[0].LeaseUntil.After(time.Now()) {
		t.Fatalf("state after the runs: %+v %v (the lease is released at stop)", st, err)
	}
	if _, err := delivery.NewRunner(db, []delivery.Sink{sink, sink}, opts); err == nil {
		t.Fatal("two sinks of one name were accepted")
	}
}
