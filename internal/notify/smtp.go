package notify

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// TLSMode says how the connection to the mail server is protected.
type TLSMode string

// The TLS modes.
const (
	TLSStartTLS TLSMode = "starttls" // submission (587): plain connection upgraded by STARTTLS, or nothing is sent
	TLSImplicit TLSMode = "tls"      // submissions (465): TLS from the first byte
	TLSNone     TLSMode = "none"     // no TLS at all, for a relay on the same machine; no authentication
)

// SMTP is where and how the emails are sent.
type SMTP struct {
	Server   string  // host:port
	TLS      TLSMode // "" is STARTTLS
	Username string  // "" sends without authentication
	Password string
	// From is the sender, an address or "Name <address>"; its domain also ends every Message-ID.
	From string
	// RootCAs verify the server's certificate; nil means the system's roots.
	RootCAs *x509.CertPool
	// Timeout bounds one send: connecting, TLS, authentication and one message (30 s if 0).
	Timeout time.Duration
	// HelloName is the name given in EHLO ("localhost" if "").
	HelloName string
}

// mailer sends messages to one server with the settings of an SMTP that check has accepted.
type mailer struct {
	cfg  SMTP
	tls  *tls.Config
	from *mail.Address
}

// newMailer checks the settings. The threats: a password sent in the clear, or an email
// (which names who read which device's keys) handed to a server that is not the one named.
// So authentication needs TLS, certificates are verified, and STARTTLS is required, never
// merely tried.
func newMailer(cfg SMTP) (*mailer, error) {
	if cfg.TLS == "" {
		cfg.TLS = TLSStartTLS
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.HelloName == "" {
		cfg.HelloName = "localhost"
	}
	host, port, err := net.SplitHostPort(cfg.Server)
	if err != nil || host == "" || port == "" {
		return nil, fmt.Errorf("smtp server %q: want host:port, like mail.example.com:587", cfg.Server)
	}
	switch cfg.TLS {
	case TLSStartTLS, TLSImplicit:
	case TLSNone:
		if cfg.Username != "" {
			return nil, errors.New("smtp: authentication is sent only over TLS: use starttls or tls, or no username")
		}
	default:
		return nil, fmt.Errorf("smtp tls %q: want starttls, tls or none", cfg.TLS)
	}
	if cfg.Username != "" && cfg.Password == "" {
		return nil, errors.New("smtp: a username needs a password")
	}
	if cfg.Username == "" && cfg.Password != "" {
		return nil, errors.New("smtp: a password needs a username")
	}
	if strings.ContainsAny(cfg.Username+cfg.HelloName, "\r\n\x00") {
		return nil, errors.New("smtp: the username and hello name must be one line")
	}
	from, err := mail.ParseAddress(cfg.From)
	if err != nil || !plainAddress(from.Address) {
		return nil, fmt.Errorf("smtp from %q: want an email address, like keyward@example.com or \"Keyward <keyward@example.com>\"", cfg.From)
	}
	return &mailer{cfg: cfg, from: from, tls: &tls.Config{ServerName: host, RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12}}, nil
}

// plainAddress reports whether s is a bare address local@domain that SMTP's MAIL and RCPT take
// as it is: printable ASCII, no spaces, quotes, brackets or separators.
func plainAddress(s string) bool {
	local, domain, ok := strings.Cut(s, "@")
	if !ok || local == "" || domain == "" || strings.Contains(domain, "@") || len(s) > 254 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),:;<>[\]`, c) >= 0 {
			return false
		}
	}
	a, err := mail.ParseAddress(s)
	return err == nil && a.Name == "" && a.Address == s
}

// permanentError is a refusal the server means for good (5xx) for one message or recipient:
// sending it again would be refused again, so it is logged and not retried.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// permanent marks 5xx replies as permanentError, leaving the rest (4xx, network, TLS) to be
// retried.
func permanent(err error) error {
	var se *smtp.SMTPError
	if errors.As(err, &se) && se.Code >= 500 && se.Code < 600 {
		return permanentError{err}
	}
	return err
}

// mailConn is one connection to the server, reused for the messages of one delivery.
type mailConn struct {
	m   *mailer
	raw net.Conn
	c   *smtp.Client
}

// guard bounds ctx by the send timeout and closes conn when it runs out, so that no read or
// write on the connection outlasts it. The caller calls the returned function when done.
func (m *mailer) guard(ctx context.Context, conn net.Conn) (context.Context, func()) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	return ctx, func() {
		stop()
		cancel()
	}
}

// timedOut names the timeout as the cause of an error it provoked.
func (m *mailer) timedOut(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return err
}

// open connects, sets up TLS as configured and authenticates, all within one send timeout.
func (m *mailer) open(ctx context.Context) (*mailConn, error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", m.cfg.Server)
	if err != nil {
		return nil, fmt.Errorf("smtp %s: %w", m.cfg.Server, err)
	}
	s := &mailConn{m: m, raw: raw}
	gctx, done := m.guard(ctx, raw)
	err = m.timedOut(gctx, s.start(gctx))
	done()
	if err != nil {
		s.close()
		return nil, fmt.Errorf("smtp %s: %w", m.cfg.Server, err)
	}
	return s, nil
}

// start sets up TLS and authenticates on a new connection.
func (s *mailConn) start(ctx context.Context) error {
	m := s.m
	var err error
	switch m.cfg.TLS {
	case TLSImplicit:
		tc := tls.Client(s.raw, m.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			return err
		}
		s.c = smtp.NewClient(tc)
		err = s.c.Hello(m.cfg.HelloName)
	case TLSStartTLS:
		// NewClientStartTLS refuses a server that does not offer STARTTLS; the EHLO after it
		// runs the handshake, which verifies the certificate.
		if s.c, err = smtp.NewClientStartTLS(s.raw, m.tls); err == nil {
			err = s.c.Hello(m.cfg.HelloName)
		}
	default:
		s.c = smtp.NewClient(s.raw)
		err = s.c.Hello(m.cfg.HelloName)
	}
	if err != nil {
		return err
	}
	s.c.CommandTimeout, s.c.SubmissionTimeout = m.cfg.Timeout, m.cfg.Timeout
	if m.cfg.Username == "" {
		return nil
	}
	if _, ok := s.c.TLSConnectionState(); !ok {
		return errors.New("refusing to authenticate without TLS")
	}
	switch {
	case s.c.SupportsAuth(sasl.Plain):
		return s.c.Auth(sasl.NewPlainClient("", m.cfg.Username, m.cfg.Password))
	case s.c.SupportsAuth(sasl.Login):
		return s.c.Auth(sasl.NewLoginClient(m.cfg.Username, m.cfg.Password))
	}
	return errors.New("the server offers neither AUTH PLAIN nor AUTH LOGIN")
}

// send hands one message for one recipient to the server. A permanentError means the server
// refused this recipient or message for good; the connection stays usable after it. Any other
// error leaves the connection broken.
func (s *mailConn) send(ctx context.Context, to string, msg []byte) error {
	ctx, done := s.m.guard(ctx, s.raw)
	defer done()
	return s.m.timedOut(ctx, s.transaction(to, msg))
}

func (s *mailConn) transaction(to string, msg []byte) error {
	if err := s.c.Mail(s.m.from.Address, nil); err != nil {
		return err
	}
	if err := s.c.Rcpt(to, nil); err != nil {
		if perr := permanent(err); errors.As(perr, new(permanentError)) {
			if rerr := s.c.Reset(); rerr != nil {
				return rerr
			}
			return perr
		}
		return err
	}
	w, err := s.c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	return permanent(w.Close())
}

// close ends the connection, politely if the server still listens.
func (s *mailConn) close() {
	if s.c == nil {
		s.raw.Close()
		return
	}
	_, done := s.m.guard(context.Background(), s.raw)
	defer done()
	// Every message was answered already: a failed QUIT loses nothing.
	_ = s.c.Quit()
	s.c.Close()
}
