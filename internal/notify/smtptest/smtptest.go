// Package smtptest runs a real SMTP server (go-smtp) on 127.0.0.1 for tests: STARTTLS or
// implicit TLS under a certificate authority made for the test, AUTH PLAIN and LOGIN only over
// TLS, a record of every message and of all the traffic after TLS, and refusals on demand.
package smtptest

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/keyward/keyward/internal/testkit"
)

// Mail is one message as the server took it.
type Mail struct {
	From   string
	To     []string
	Data   []byte
	TLS    bool
	Authed string // the username that authenticated, "" without
}

// Parse parses the message and returns it with its body decoded from quoted-printable.
func (r Mail) Parse(t testing.TB) (*mail.Message, string) {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(r.Data))
	if err != nil {
		t.Fatalf("the message does not parse: %v\n%s", err, r.Data)
	}
	body, err := io.ReadAll(quotedprintable.NewReader(m.Body))
	if err != nil {
		t.Fatalf("the body is not quoted-printable: %v", err)
	}
	return m, string(body)
}

// Server is a real SMTP server on 127.0.0.1. Set its options in the function given to Start.
type Server struct {
	Implicit bool     // TLS from the first byte, not STARTTLS
	NoTLS    bool     // offer no STARTTLS
	User     string   // the account AUTH accepts ("keyward"); "" takes mail without authentication
	Pass     string   // its password ("s3cret-pass")
	Mechs    []string // AUTH mechanisms offered (PLAIN and LOGIN if nil)
	// CertNames are the names of the server's certificate (127.0.0.1 and localhost if nil).
	CertNames []string

	CA      testkit.CA     // the authority that issued the server's certificate
	Addr    string         // where it listens, once started
	Traffic testkit.Buffer // everything sent and received after TLS, on every connection

	t        testing.TB
	srv      *smtp.Server
	mu       sync.Mutex
	mails    []Mail
	refuse   map[string]*smtp.SMTPError // recipients refused at RCPT
	dataFail int                        // the next DATA commands refused with 451
}

// Start starts a server, with the options configure sets, and stops it when the test ends.
func Start(t testing.TB, configure func(*Server)) *Server {
	t.Helper()
	s := &Server{t: t, User: "keyward", Pass: "s3cret-pass", refuse: map[string]*smtp.SMTPError{}}
	if configure != nil {
		configure(s)
	}
	s.CA = testkit.NewCA(t, s.CertNames...)
	s.listen("127.0.0.1:0")
	t.Cleanup(s.Stop)
	return s
}

// Restart starts the server again, after Stop, on the address it had.
func (s *Server) Restart() {
	s.t.Helper()
	s.listen(s.Addr)
}

func (s *Server) listen(addr string) {
	s.t.Helper()
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &mailSession{s: s, conn: c}, nil
	}))
	srv.Domain = "localhost"
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	srv.Debug = &s.Traffic
	srv.ErrorLog = discardLogger{}
	tlsConfig := &tls.Config{Certificates: []tls.Certificate{s.CA.Cert}}
	if !s.NoTLS {
		srv.TLSConfig = tlsConfig
	}
	var ln net.Listener
	var err error
	for range 50 { // the port of a stopped server may take a moment to be free again
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatal(err)
	}
	if s.Implicit {
		ln = tls.NewListener(ln, tlsConfig)
	}
	s.srv, s.Addr = srv, ln.Addr().String()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			s.t.Errorf("smtp server: %v", err)
		}
	}()
}

// Stop stops the server: connections are refused until Restart.
func (s *Server) Stop() {
	if s.srv != nil {
		s.srv.Close()
		s.srv = nil
	}
}

// Refuse makes RCPT refuse addr with err until Accept.
func (s *Server) Refuse(addr string, err *smtp.SMTPError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuse[addr] = err
}

// Accept takes mail for addr again.
func (s *Server) Accept(addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.refuse, addr)
}

// FailData makes the next n messages be refused at the end of DATA with 451 (try later).
func (s *Server) FailData(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dataFail = n
}

// Received returns the messages taken so far.
func (s *Server) Received() []Mail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Mail(nil), s.mails...)
}

// To returns the messages taken for addr.
func (s *Server) To(addr string) []Mail {
	var out []Mail
	for _, m := range s.Received() {
		for _, a := range m.To {
			if a == addr {
				out = append(out, m)
			}
		}
	}
	return out
}

// Refusals of a recipient: for good, and for now.
var (
	Error550 = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such mailbox"}
	Error451 = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
)

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}
func (discardLogger) Println(...any)        {}

type mailSession struct {
	s      *Server
	conn   *smtp.Conn
	authed string
	from   string
	to     []string
}

func (m *mailSession) AuthMechanisms() []string {
	if m.s.Mechs != nil {
		return m.s.Mechs
	}
	return []string{sasl.Plain, sasl.Login}
}

func (m *mailSession) Auth(mech string) (sasl.Server, error) {
	check := func(user, pass string) error {
		if user != m.s.User || pass != m.s.Pass {
			return smtp.ErrAuthFailed
		}
		m.authed = user
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(_, user, pass string) error { return check(user, pass) }), nil
	case sasl.Login:
		return &loginServer{check: check}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (m *mailSession) Mail(from string, _ *smtp.MailOptions) error {
	if m.s.User != "" && m.authed == "" {
		return smtp.ErrAuthRequired
	}
	m.from = from
	return nil
}

func (m *mailSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	if err := m.s.refuse[to]; err != nil {
		return err
	}
	m.to = append(m.to, to)
	return nil
}

func (m *mailSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	if m.s.dataFail > 0 {
		m.s.dataFail--
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
	}
	_, tlsOn := m.conn.TLSConnectionState()
	m.s.mails = append(m.s.mails, Mail{From: m.from, To: m.to, Data: b, TLS: tlsOn, Authed: m.authed})
	return nil
}

func (m *mailSession) Reset() { m.from, m.to = "", nil }

func (m *mailSession) Logout() error { return nil }

// loginServer is the server side of AUTH LOGIN, which go-sasl has only as a client.
type loginServer struct {
	check func(user, pass string) error
	user  *string
}

func (l *loginServer) Next(response []byte) ([]byte, bool, error) {
	switch {
	case l.user == nil && response == nil:
		return []byte("Username:"), false, nil
	case l.user == nil:
		u := string(response)
		l.user = &u
		return []byte("Password:"), false, nil
	}
	return nil, true, l.check(*l.user, string(response))
}
