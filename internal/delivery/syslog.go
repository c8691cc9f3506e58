package delivery

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/escrow"
)

// SyslogConfig configures the syslog sink.
type SyslogConfig struct {
	// URL is tcp://host:port (RFC 6587 octet counting over plain TCP) or tls://host:port
	// (RFC 5425).
	URL string
	// CAFile holds the PEM certificates that may sign the receiver's certificate; the system
	// pool without it. TLS only.
	CAFile string
	// CertFile and KeyFile are this server's client certificate, for receivers that ask for
	// one. TLS only.
	CertFile, KeyFile string
	// Hostname and AppName fill the HOSTNAME and APP-NAME fields (default: the machine's name
	// and "keyward").
	Hostname, AppName string
	// Facility is a facility name (kern … local7) or number (0-23); default "auth".
	Facility string
	// Timeout bounds connecting and writing one batch (default 10 s).
	Timeout time.Duration
}

// Syslog is the syslog sink. Plain syslog has no acknowledgement: a batch counts as accepted
// once the connection took all of it without error. Before each batch the connection is
// checked for a close by the receiver (as rsyslog's own forwarder does), so a receiver that
// went away is noticed before events are written into a dead connection.
type Syslog struct {
	network, addr string
	tls           *tls.Config
	hostname, app string
	facility      int
	timeout       time.Duration

	mu   sync.Mutex
	conn net.Conn
}

// NewSyslog checks cfg and returns the sink; it connects at the first delivery.
func NewSyslog(cfg SyslogConfig) (*Syslog, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Host == "" || u.Port() == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
		return nil, fmt.Errorf("syslog: %q is not tcp://host:port or tls://host:port", cfg.URL)
	}
	s := &Syslog{network: "tcp", addr: u.Host, hostname: cfg.Hostname, app: cfg.AppName, timeout: cfg.Timeout}
	switch u.Scheme {
	case "tcp":
		if cfg.CAFile != "" || cfg.CertFile != "" || cfg.KeyFile != "" {
			return nil, errors.New("syslog: a CA file or client certificate needs tls://")
		}
	case "tls":
		s.tls = &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}
		if s.tls.RootCAs, err = loadCAFile("syslog", cfg.CAFile); err != nil {
			return nil, err
		}
		if (cfg.CertFile == "") != (cfg.KeyFile == "") {
			return nil, errors.New("syslog: give both the client certificate and its key, or neither")
		}
		if cfg.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("syslog: client certificate: %w", err)
			}
			s.tls.Certificates = []tls.Certificate{cert}
		}
	default:
		return nil, fmt.Errorf("syslog: %q: the scheme must be tcp or tls", cfg.URL)
	}
	if s.hostname == "" {
		if s.hostname, err = os.Hostname(); err != nil || s.hostname == "" {
			s.hostname = "-"
		}
	}
	if s.app == "" {
		s.app = "keyward"
	}
	if s.hostname = headerField(s.hostname, 255); s.hostname == "" {
		return nil, errors.New("syslog: the hostname must be printable ASCII")
	}
	if s.app = headerField(s.app, 48); s.app == "" {
		return nil, errors.New("syslog: the app name must be printable ASCII")
	}
	if s.facility, err = ParseFacility(cfg.Facility); err != nil {
		return nil, err
	}
	if s.timeout <= 0 {
		s.timeout = 10 * time.Second
	}
	return s, nil
}

// Name is "syslog".
func (s *Syslog) Name() string { return "syslog" }

// Deliver writes the events as one burst of octet-counted messages. On any error the connection
// is dropped and nothing counts as accepted: the whole batch goes again (receivers drop
// duplicates by seq).
func (s *Syslog) Deliver(ctx context.Context, events []escrow.AuditEvent) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil && !alive(s.conn) {
		s.drop()
	}
	deadline := time.Now().Add(s.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if s.conn == nil {
		dctx, cancel := context.WithDeadline(ctx, deadline)
		defer cancel()
		var err error
		if s.tls != nil {
			d := tls.Dialer{Config: s.tls}
			s.conn, err = d.DialContext(dctx, s.network, s.addr)
		} else {
			var d net.Dialer
			s.conn, err = d.DialContext(dctx, s.network, s.addr)
		}
		if err != nil {
			s.conn = nil
			return 0, fmt.Errorf("syslog: connect to %s: %w", s.addr, err)
		}
	}
	if err := s.conn.SetWriteDeadline(deadline); err != nil {
		s.drop()
		return 0, err
	}
	w := bufio.NewWriterSize(s.conn, 32<<10)
	for _, e := range events {
		msg := s.Format(e)
		w.WriteString(strconv.Itoa(len(msg)))
		w.WriteByte(' ')
		w.Write(msg)
	}
	if err := w.Flush(); err != nil {
		s.drop()
		return 0, fmt.Errorf("syslog: write to %s: %w", s.addr, err)
	}
	return len(events), nil
}

// Close closes the connection.
func (s *Syslog) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drop()
	return nil
}

func (s *Syslog) drop() {
	if s.conn != nil {
		_ = s.conn.Close()
		s.conn = nil
	}
}

// loadCAFile reads the PEM certificates of a CA file into a pool; "" gives nil, the system pool.
func loadCAFile(sink, path string) (*x509.CertPool, error) {
	if path == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: CA file: %w", sink, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: CA file %s holds no PEM certificate", sink, path)
	}
	return pool, nil
}

// alive reports whether the receiver has not closed the connection: a receiver sends nothing,
// so a read that does not just time out means end of file or a reset.
func alive(c net.Conn) bool {
	if err := c.SetReadDeadline(time.Now().Add(time.Millisecond)); err != nil {
		return false
	}
	var b [1]byte
	_, err := c.Read(b[:])
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// SDID names Keyward's structured data element. The part after @ is a Private Enterprise Number
// (RFC 5424 §7.2.2); 32473 is the one IANA reserves for documentation (RFC 5612), so it names
// no other organisation. Receivers' rules key on it: it must never change without notice.
const SDID = "keyward@32473"

// MaxMessage is the longest message Format returns, in octets: RFC 5425 receivers must take
// 2048 and should take 8192, rsyslog's default limit is 8 KiB.
const MaxMessage = 8192

// param is one SD-PARAM: a field of the event and the most octets its escaped value may take.
type param struct {
	name, value string
	limit       int
}

// sdParams lists the fields of an event that go into the structured data, in order: the one
// place to add a field. They are the audit export's fields (audit.Record), so a SIEM sees the
// same names and formats as an export.
func sdParams(r audit.Record) []param {
	return []param{
		{"seq", strconv.FormatInt(r.Seq, 10), 20},
		{"hash", r.Hash, 64},
		{"time", r.Time, 32},
		{"actorType", r.Actor.Type, 16},
		{"actorId", r.Actor.ID, 128},
		{"actorName", r.Actor.Name, 256},
		{"action", r.Action, 64},
		{"deviceId", r.DeviceID, 64},
		{"keyId", r.KeyID, 128},
		{"source", r.Source, 32},
		{"reason", r.Reason, 1024},
		{"outcome", r.Outcome, 16},
		{"ip", r.IP, 64},
		{"userAgent", r.UserAgent, 512},
		{"detail", r.Detail, 4096},
		{"ticket", r.Ticket, 256},
	}
}

// Format returns the RFC 5424 message for e, without its octet count: header, one
// structured-data element with every field of the event and a short UTF-8 summary. It is valid
// UTF-8 and at most MaxMessage octets: each value is held to its own limit, cut at a character
// boundary and marked truncated.
func (s *Syslog) Format(e escrow.AuditEvent) []byte {
	r := audit.ToRecord(e)
	b := make([]byte, 0, 1024)
	b = append(b, '<')
	b = strconv.AppendInt(b, int64(s.facility*8+severity(e)), 10)
	b = append(b, ">1 "...)
	b = append(b, r.Time...)
	b = append(b, ' ')
	b = append(b, s.hostname...)
	b = append(b, ' ')
	b = append(b, s.app...)
	b = append(b, " - "...)
	if msgid := headerField(r.Action, 32); msgid != "" {
		b = append(b, msgid...)
	} else {
		b = append(b, '-')
	}
	b = append(b, " ["...)
	b = append(b, SDID...)
	var truncated []string
	for _, p := range sdParams(r) {
		if p.value == "" {
			continue
		}
		v, cut := sdValue(p.value, p.limit)
		if cut {
			truncated = append(truncated, p.name)
		}
		b = append(b, ' ')
		b = append(b, p.name...)
		b = append(b, `="`...)
		b = append(b, v...)
		b = append(b, '"')
	}
	if len(truncated) > 0 {
		b = append(b, ` truncated="`...)
		b = append(b, strings.Join(truncated, ",")...)
		b = append(b, '"')
	}
	b = append(b, "] \xEF\xBB\xBF"...) // the BOM: MSG is UTF-8 (RFC 5424 §6.4)
	summary, _ := sdValue(r.Action+" "+r.Outcome+" by "+r.Actor.Name, 256)
	b = append(b, summary...)
	return b
}

// sdValue escapes v as an SD-PARAM value (RFC 5424 §6.3.3: '"', '\' and ']' get a backslash),
// after escaping invalid UTF-8 and control characters as the trail does, and cuts the result
// to at most limit octets without splitting a character or an escape. cut reports a cut.
func sdValue(v string, limit int) (string, bool) {
	v = escrow.CleanText(v)
	var b strings.Builder
	for _, r := range v {
		var add string
		switch r {
		case '"', '\\', ']':
			add = `\` + string(r)
		default:
			add = string(r)
		}
		if b.Len()+len(add) > limit {
			return b.String(), true
		}
		b.WriteString(add)
	}
	return b.String(), false
}

// headerField keeps the printable ASCII of v (what RFC 5424 allows in HOSTNAME, APP-NAME and
// MSGID), at most limit octets.
func headerField(v string, limit int) string {
	var b strings.Builder
	for i := 0; i < len(v) && b.Len() < limit; i++ {
		if c := v[i]; c > 32 && c < 127 {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// severity maps an event to a syslog severity: errors are err (3), refusals warning (4), a
// disclosure of key material notice (5), the rest informational (6).
func severity(e escrow.AuditEvent) int {
	switch {
	case e.Outcome == escrow.OutcomeError:
		return 3
	case e.Outcome == escrow.OutcomeDenied:
		return 4
	case e.Action == escrow.ActionKeyRead || e.Action == escrow.ActionKeyExport:
		return 5
	}
	return 6
}

var facilities = []string{"kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
	"authpriv", "ftp", "ntp", "security", "console", "solaris-cron",
	"local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7"}

// ParseFacility returns the number of a syslog facility given by name or number; "" is auth.
func ParseFacility(s string) (int, error) {
	if s == "" {
		return 4, nil
	}
	for i, name := range facilities {
		if strings.EqualFold(s, name) {
			return i, nil
		}
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 && n < len(facilities) {
		return n, nil
	}
	return 0, fmt.Errorf("syslog: unknown facility %q; use a name (kern, user, auth, authpriv, daemon, local0 … local7) or a number from 0 to 23", s)
}
