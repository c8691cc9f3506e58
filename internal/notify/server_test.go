package notify_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
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

// testCA is a certificate authority made for one test, and a certificate it issued for
// 127.0.0.1 and localhost, or for the names given.
type testCA struct {
	pool *x509.CertPool
	cert tls.Certificate
	pem  []byte
}

func newTestCA(t testing.TB, names ...string) testCA {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Keyward test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	if len(names) > 0 {
		tmpl.DNSNames, tmpl.IPAddresses = names, nil
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return testCA{pool: pool, cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})}
}

// received is one message as the server took it.
type received struct {
	From   string
	To     []string
	Data   []byte
	TLS    bool
	Authed string // the username that authenticated, "" without
}

// header parses the message's headers and returns it with its body decoded.
func (r received) parse(t testing.TB) (*mail.Message, string) {
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

// mailServer is a real SMTP server (go-smtp) on 127.0.0.1: STARTTLS or implicit TLS with a test
// CA, AUTH PLAIN and LOGIN only over TLS, and refusals on demand.
type mailServer struct {
	t        testing.TB
	ca       testCA
	implicit bool   // TLS from the first byte
	noTLS    bool   // offer no STARTTLS
	user     string // "" takes mail without authentication
	pass     string
	mechs    []string // AUTH mechanisms offered (PLAIN and LOGIN if nil)
	// certNames are the names of the server's certificate (127.0.0.1 and localhost if nil).
	certNames []string

	srv     *smtp.Server
	ln      net.Listener
	addr    string
	traffic testkit.Buffer // everything sent and received after TLS, on every connection

	mu       sync.Mutex
	mails    []received
	refuse   map[string]*smtp.SMTPError // a recipient refused at RCPT, until deleted
	dataFail int                        // the next DATA commands refused with 451
}

func newMailServer(t testing.TB, configure func(*mailServer)) *mailServer {
	t.Helper()
	s := &mailServer{t: t, user: "keyward", pass: "s3cret-pass", refuse: map[string]*smtp.SMTPError{}}
	if configure != nil {
		configure(s)
	}
	s.ca = newTestCA(t, s.certNames...)
	s.start("127.0.0.1:0")
	t.Cleanup(s.stop)
	return s
}

// start listens on addr (again, after stop, on the address it had).
func (s *mailServer) start(addr string) {
	s.t.Helper()
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &mailSession{s: s, conn: c}, nil
	}))
	srv.Domain = "localhost"
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	srv.Debug = &s.traffic
	srv.ErrorLog = discardLogger{}
	tlsConfig := &tls.Config{Certificates: []tls.Certificate{s.ca.cert}}
	if !s.noTLS {
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
	if s.implicit {
		ln = tls.NewListener(ln, tlsConfig)
	}
	s.srv, s.ln, s.addr = srv, ln, ln.Addr().String()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			s.t.Errorf("smtp server: %v", err)
		}
	}()
}

func (s *mailServer) stop() {
	if s.srv != nil {
		s.srv.Close()
		s.srv = nil
	}
}

func (s *mailServer) received() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.mails...)
}

// to returns the messages received for addr.
func (s *mailServer) to(addr string) []received {
	var out []received
	for _, m := range s.received() {
		for _, a := range m.To {
			if a == addr {
				out = append(out, m)
			}
		}
	}
	return out
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}
func (discardLogger) Println(...any)        {}

type mailSession struct {
	s      *mailServer
	conn   *smtp.Conn
	authed string
	from   string
	to     []string
}

func (m *mailSession) AuthMechanisms() []string {
	if m.s.mechs != nil {
		return m.s.mechs
	}
	return []string{sasl.Plain, sasl.Login}
}

func (m *mailSession) Auth(mech string) (sasl.Server, error) {
	check := func(user, pass string) error {
		if user != m.s.user || pass != m.s.pass {
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
	if m.s.user != "" && m.authed == "" {
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
	m.s.mails = append(m.s.mails, received{From: m.from, To: m.to, Data: b, TLS: tlsOn, Authed: m.authed})
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

// Refusals of a recipient: for good, and for now.
var (
	smtpError550 = smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such mailbox"}
	smtpError451 = smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
)
