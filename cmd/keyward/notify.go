package main

import (
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/notify"
)

// emailFlags are the settings of the email notifications: the mail server (--smtp-*) and
// what is sent (--notify-*). Email is on when --smtp-server is given.
type emailFlags struct {
	Server       string
	TLS          string
	Username     string
	PasswordFile string // never the password itself: arguments are visible to other local users
	From         string
	CA           string
	Timeout      time.Duration
	Owners       bool
	Timezone     string
	MaxAge       time.Duration
}

func defaultEmailFlags() emailFlags {
	return emailFlags{TLS: string(notify.TLSStartTLS), Timeout: 30 * time.Second, Owners: true, MaxAge: 7 * 24 * time.Hour}
}

func (f *emailFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.Server, "smtp-server", f.Server, "mail server (host:port) for email notifications; no email without it")
	fs.StringVar(&f.TLS, "smtp-tls", f.TLS, "starttls (port 587, STARTTLS required), tls (port 465) or none (a relay on this machine; no authentication)")
	fs.StringVar(&f.Username, "smtp-username", f.Username, "user name for AUTH PLAIN or LOGIN (only over TLS); none without it")
	fs.StringVar(&f.PasswordFile, "smtp-password-file", f.PasswordFile, "file holding the SMTP password")
	fs.StringVar(&f.From, "smtp-from", f.From, "sender of the emails, like \"Keyward <keyward@example.com>\"")
	fs.StringVar(&f.CA, "smtp-ca", f.CA, "CA certificates (PEM) that verify the mail server; the system's roots without it")
	fs.DurationVar(&f.Timeout, "smtp-timeout", f.Timeout, "bound on one send: connection, TLS, authentication and one message")
	fs.BoolVar(&f.Owners, "notify-owners", f.Owners, "email a device's owner when someone else views its keys (with --smtp-server)")
	fs.StringVar(&f.Timezone, "notify-timezone", f.Timezone, "time zone shown beside UTC in the emails, like Europe/Paris (default the server's)")
	fs.DurationVar(&f.MaxAge, "notify-max-age", f.MaxAge, "events older than this get no email (a trail delivered from its start does not mail its history)")
}

// validate checks the flags against each other; the files are read at start.
func (f *emailFlags) validate() error {
	if f.Server == "" {
		if f.Username != "" || f.PasswordFile != "" || f.From != "" || f.CA != "" {
			return errors.New("--smtp-from, --smtp-username, --smtp-password-file and --smtp-ca need --smtp-server")
		}
		return nil
	}
	switch notify.TLSMode(f.TLS) {
	case notify.TLSStartTLS, notify.TLSImplicit:
	case notify.TLSNone:
		if f.Username != "" {
			return errors.New("--smtp-tls none sends no authentication: the password would cross the network in the clear; use starttls or tls")
		}
	default:
		return fmt.Errorf("--smtp-tls must be starttls, tls or none, not %q", f.TLS)
	}
	switch {
	case f.From == "":
		return errors.New("--smtp-server needs --smtp-from, the sender of the emails")
	case (f.Username == "") != (f.PasswordFile == ""):
		return errors.New("give both --smtp-username and --smtp-password-file, or neither")
	case f.Timeout <= 0 || f.Timeout > 5*time.Minute:
		return errors.New("--smtp-timeout must be more than 0 and at most 5m")
	case f.MaxAge <= 0:
		return errors.New("--notify-max-age must be more than 0")
	}
	if _, err := f.zone(); err != nil {
		return err
	}
	return nil
}

func (f *emailFlags) zone() (*time.Location, error) {
	if f.Timezone == "" {
		return time.Local, nil
	}
	z, err := time.LoadLocation(f.Timezone)
	if err != nil {
		return nil, fmt.Errorf("--notify-timezone %q: not a time zone this machine knows (like Europe/Paris)", f.Timezone)
	}
	return z, nil
}

// notifySink builds the email sink from the flags, reading the password and CA files; nil
// without --smtp-server. It is the sink named "email" of the audit trail's delivery.
func (s *Server) notifySink() (*notify.Notifier, error) {
	f := s.Email
	if f.Server == "" {
		return nil, nil
	}
	var password string
	if f.PasswordFile != "" {
		fi, err := os.Stat(f.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("--smtp-password-file: %w", err)
		}
		// As for the master key: a secret other users can read is refused, not used. Its
		// group may read it (root:keyward, mode 640, for the service's user).
		if perm := fi.Mode().Perm(); runtime.GOOS != "windows" && perm&0o007 != 0 {
			return nil, fmt.Errorf("--smtp-password-file %s is accessible by other users (mode %04o); run chmod 640 on it", f.PasswordFile, uint32(perm))
		}
		b, err := os.ReadFile(f.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("--smtp-password-file: %w", err)
		}
		if password = strings.TrimRight(string(b), "\r\n"); password == "" {
			return nil, fmt.Errorf("--smtp-password-file %s is empty", f.PasswordFile)
		}
	}
	var roots *x509.CertPool
	if f.CA != "" {
		b, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, fmt.Errorf("--smtp-ca: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--smtp-ca %s holds no PEM certificate", f.CA)
		}
	}
	zone, err := f.zone()
	if err != nil {
		return nil, err
	}
	hello, err := os.Hostname()
	if err != nil || strings.ContainsAny(hello, " \r\n") {
		hello = ""
	}
	n, err := notify.New(notify.Config{
		SMTP: notify.SMTP{Server: f.Server, TLS: notify.TLSMode(f.TLS), Username: f.Username, Password: password,
			From: f.From, RootCAs: roots, Timeout: f.Timeout, HelloName: hello},
		PublicURL: s.emailLinkBase(), Owners: f.Owners, Zone: zone, MaxAge: f.MaxAge, Log: s.Log, Now: s.Now,
	}, s.db)
	if err != nil {
		return nil, err
	}
	if s.emailLinkBase() == "" {
		s.Log.Warn("emails carry no links to the portal: set --public-url")
	}
	return n, nil
}

// emailLinkBase is where the emails' links point: --public-url, or the address the server
// listens on when others can reach it (not a loopback or wildcard address); "" for none.
func (s *Server) emailLinkBase() string {
	if s.PublicURL != "" {
		return s.PublicURL
	}
	host, _, err := net.SplitHostPort(s.Addr())
	if ip := net.ParseIP(host); err != nil || ip == nil || ip.IsLoopback() || ip.IsUnspecified() {
		return ""
	}
	return s.URL()
}
