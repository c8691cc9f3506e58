package notify_test

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/notify"
	"github.com/keyward/keyward/internal/notify/smtptest"
)

// Every way of reaching the mail server, against a real one: what is sent, and what is
// refused before anything is.
func TestSMTPTransports(t *testing.T) {
	tests := []struct {
		name    string
		server  func(*smtptest.Server)
		config  func(*notify.SMTP)
		wantErr string // "" when the email goes
		wantTLS bool
	}{
		{name: "STARTTLS with AUTH PLAIN", wantTLS: true},
		{name: "implicit TLS", server: func(s *smtptest.Server) { s.Implicit = true },
			config: func(c *notify.SMTP) { c.TLS = notify.TLSImplicit }, wantTLS: true},
		{name: "AUTH LOGIN only", server: func(s *smtptest.Server) { s.Mechs = []string{sasl.Login} }, wantTLS: true},
		{name: "plain relay without authentication", server: func(s *smtptest.Server) { s.NoTLS, s.User = true, "" },
			config: func(c *notify.SMTP) { c.TLS, c.Username, c.Password = notify.TLSNone, "", "" }},
		{name: "STARTTLS not offered", server: func(s *smtptest.Server) { s.NoTLS = true }, wantErr: "STARTTLS"},
		{name: "certificate of an unknown CA", config: func(c *notify.SMTP) { c.RootCAs = nil }, wantErr: "certificate"},
		{name: "certificate for another name", server: func(s *smtptest.Server) { s.CertNames = []string{"mail.example.org"} }, wantErr: "certificate"},
		{name: "wrong password", config: func(c *notify.SMTP) { c.Password = "wrong" }, wantErr: "535"},
		{name: "no mechanism offered", server: func(s *smtptest.Server) { s.Mechs = []string{"CRAM-MD5"} }, wantErr: "neither AUTH PLAIN nor AUTH LOGIN"},
		{name: "implicit TLS to a STARTTLS port", config: func(c *notify.SMTP) { c.TLS = notify.TLSImplicit }, wantErr: "tls"},
		{name: "server that never answers", config: func(c *notify.SMTP) { c.Server, c.Timeout = silentServer(t), 300*time.Millisecond },
			wantErr: "deadline exceeded"},
	}
	for _, tc := range tests {
		start := time.Now()
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.server)
			helpdesk := e.person(escrow.RoleHelpdesk, "bob@example.com")
			id := e.enroll("LT-SMTP", "alice@example.com", "C")
			e.view(helpdesk, id, "transport")
			events := e.trail(0)
			read := len(events) - 2 // the key.read, then its rotation request
			n := e.notifier(func(c *notify.Config) {
				if tc.config != nil {
					tc.config(&c.SMTP)
				}
			})
			got, err := n.Deliver(e.ctx, events)
			mails := e.mail.Received()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || got != read || len(mails) != 0 {
					t.Fatalf("Deliver accepted %d of %d (%v), %d emails; want %d, an error with %q, none sent", got, len(events), err, len(mails), read, tc.wantErr)
				}
				t.Logf("refused: %v", err)
				if strings.Contains(err.Error(), e.mail.Pass) {
					t.Errorf("the error shows the password: %v", err)
				}
				if d := time.Since(start); d > 4*time.Second {
					t.Errorf("the failure took %v: the send timeout does not bound it", d)
				}
				return
			}
			if err != nil || got != len(events) || len(mails) != 1 {
				t.Fatalf("Deliver accepted %d of %d (%v), %d emails", got, len(events), err, len(mails))
			}
			if mails[0].TLS != tc.wantTLS {
				t.Errorf("TLS %v, want %v", mails[0].TLS, tc.wantTLS)
			}
		})
	}
}

// silentServer accepts connections and never says a word, like a mail server that hangs.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	return ln.Addr().String()
}
