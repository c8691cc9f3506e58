package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/store"
)

// auditDelivery holds the settings of the audit trail's delivery to outside receivers.
type auditDelivery struct {
	Syslog         string
	SyslogCA       string
	SyslogCert     string
	SyslogKey      string
	SyslogHostname string
	SyslogAppName  string
	SyslogFacility string
	Webhook        string
	WebhookSecret  string // the file holding the secret, never the secret itself
	WebhookCA      string
	Start          string // where a new sink starts: beginning or head
	Lease          time.Duration
	RetryMax       time.Duration
	Require        string // the sink a disclosure waits for; "" for none
	RequireTimeout time.Duration
	// Poll and RetryMin are how often a caught-up sink looks for events and the first wait
	// after a failure; tests shorten them.
	Poll, RetryMin time.Duration
}

func (a *auditDelivery) flags(fs *flag.FlagSet) {
	fs.StringVar(&a.Syslog, "audit-syslog", a.Syslog, "deliver the audit trail to a syslog receiver: tcp://host:port (RFC 6587) or tls://host:port (RFC 5425)")
	fs.StringVar(&a.SyslogCA, "audit-syslog-ca", a.SyslogCA, "PEM CA certificates for the syslog receiver's certificate (default: the system's)")
	fs.StringVar(&a.SyslogCert, "audit-syslog-cert", a.SyslogCert, "client certificate (PEM) to present to the syslog receiver")
	fs.StringVar(&a.SyslogKey, "audit-syslog-key", a.SyslogKey, "private key (PEM) of --audit-syslog-cert")
	fs.StringVar(&a.SyslogHostname, "audit-syslog-hostname", a.SyslogHostname, "HOSTNAME of the syslog messages (default: this machine's name)")
	fs.StringVar(&a.SyslogAppName, "audit-syslog-app-name", a.SyslogAppName, "APP-NAME of the syslog messages")
	fs.StringVar(&a.SyslogFacility, "audit-syslog-facility", a.SyslogFacility, "facility of the syslog messages: a name (auth, authpriv, local0 … local7) or a number")
	fs.StringVar(&a.Webhook, "audit-webhook", a.Webhook, "deliver the audit trail to a webhook: https://… receiving signed NDJSON batches")
	fs.StringVar(&a.WebhookSecret, "audit-webhook-secret-file", a.WebhookSecret, "file holding the webhook's signing secret (at least 32 bytes); required with --audit-webhook")
	fs.StringVar(&a.WebhookCA, "audit-webhook-ca", a.WebhookCA, "PEM CA certificates for the webhook's certificate (default: the system's)")
	fs.StringVar(&a.Start, "audit-delivery-start", a.Start, "where a receiver with no delivery yet starts: beginning (the whole trail) or head (new events only)")
	fs.DurationVar(&a.Lease, "audit-delivery-lease", a.Lease, "with several servers, how long one server's hold on a receiver lasts without renewal; another takes over after it")
	fs.DurationVar(&a.RetryMax, "audit-delivery-retry-max", a.RetryMax, "longest wait between attempts to deliver to a receiver that fails (at most half the lease)")
	fs.StringVar(&a.Require, "audit-require-delivery", a.Require, "fail closed: disclose key material only after its key.read event reached this receiver (syslog or webhook)")
	fs.DurationVar(&a.RequireTimeout, "audit-require-delivery-timeout", a.RequireTimeout, "how long a disclosure waits for --audit-require-delivery before it answers 503")
}

func defaultAuditDelivery() auditDelivery {
	return auditDelivery{SyslogAppName: "keyward", SyslogFacility: "auth", Start: "beginning", Lease: 30 * time.Second,
		RetryMax: 15 * time.Second, RequireTimeout: 5 * time.Second}
}

// check validates the settings without touching files or the network.
func (a *auditDelivery) check() error {
	if a.Start != "beginning" && a.Start != "head" {
		return fmt.Errorf("--audit-delivery-start must be beginning or head, not %q", a.Start)
	}
	if a.Lease < 3*time.Second || a.Lease > 10*time.Minute {
		return fmt.Errorf("--audit-delivery-lease must be from 3s to 10m")
	}
	if a.RetryMax <= 0 {
		return fmt.Errorf("--audit-delivery-retry-max must be more than 0")
	}
	if (a.Webhook == "") != (a.WebhookSecret == "") {
		return fmt.Errorf("give both --audit-webhook and --audit-webhook-secret-file, or neither")
	}
	if a.Webhook == "" && a.WebhookCA != "" {
		return fmt.Errorf("--audit-webhook-ca needs --audit-webhook")
	}
	if a.Syslog == "" && (a.SyslogCA != "" || a.SyslogCert != "" || a.SyslogKey != "") {
		return fmt.Errorf("--audit-syslog-ca, --audit-syslog-cert and --audit-syslog-key need --audit-syslog")
	}
	if a.RequireTimeout <= 0 || a.RequireTimeout > time.Minute {
		return fmt.Errorf("--audit-require-delivery-timeout must be more than 0 and at most 1m")
	}
	switch a.Require {
	case "":
	case "syslog":
		if a.Syslog == "" {
			return fmt.Errorf("--audit-require-delivery syslog needs --audit-syslog")
		}
	case "webhook":
		if a.Webhook == "" {
			return fmt.Errorf("--audit-require-delivery webhook needs --audit-webhook")
		}
	default:
		return fmt.Errorf("--audit-require-delivery must be syslog or webhook, not %q", a.Require)
	}
	return nil
}

// sinks builds the configured sinks, reading their files.
func (a *auditDelivery) sinks() ([]delivery.Sink, error) {
	var out []delivery.Sink
	if a.Syslog != "" {
		s, err := delivery.NewSyslog(delivery.SyslogConfig{URL: a.Syslog, CAFile: a.SyslogCA, CertFile: a.SyslogCert, KeyFile: a.SyslogKey,
			Hostname: a.SyslogHostname, AppName: a.SyslogAppName, Facility: a.SyslogFacility})
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	if a.Webhook != "" {
		secret, err := delivery.ReadSecretFile(a.WebhookSecret)
		if err != nil {
			return nil, err
		}
		w, err := delivery.NewWebhook(delivery.WebhookConfig{URL: a.Webhook, Secret: secret, CAFile: a.WebhookCA})
		clear(secret)
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, nil
}

// holderName names this server in the delivery leases: the machine, the process and a random
// part, so two servers on one machine differ and an operator can tell which one delivers.
func holderName() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), strings.ToLower(rand.Text()[:8]))
}

// gatedStore is the store with every disclosure of key material held to the fail-closed
// setting: refused at once while the required receiver is known to be down, and answered only
// once its key.read events reached the receiver. Both the API and the portal (staff views and
// self-service) disclose through Disclose, so all of them are held. The break-glass export is
// a command run without the server and is not held: it is the way in when everything else is
// down, and its key.export event reaches the receivers when the server next runs.
type gatedStore struct {
	*store.DB
	gate *delivery.Gate
}

func (g gatedStore) Disclose(ctx context.Context, o escrow.Origin, deviceID string, access escrow.Access, allowed func(escrow.Device, escrow.Settings) bool) (escrow.Disclosure, error) {
	if err := g.gate.Ready(ctx); err != nil {
		return escrow.Disclosure{}, err
	}
	d, err := g.DB.Disclose(ctx, o, deviceID, access, allowed)
	if err != nil || len(d.Keys) == 0 {
		return d, err
	}
	if err := g.gate.Delivered(ctx, d.AuditSeq); err != nil {
		for i := range d.Keys {
			d.Keys[i].Material = ""
		}
		return escrow.Disclosure{}, err
	}
	return d, nil
}

// runner builds the runner of the configured sinks (nil when none is) and, with
// --audit-require-delivery, the gate. extra are sinks configured elsewhere (the email
// notifications).
func (a *auditDelivery) runner(db *store.DB, obs delivery.Observer, opts delivery.Options, extra ...delivery.Sink) (*delivery.Runner, *delivery.Gate, error) {
	sinks, err := a.sinks()
	sinks = append(sinks, extra...)
	if err != nil || len(sinks) == 0 {
		return nil, nil, err
	}
	opts.Holder, opts.LeaseTTL, opts.MaxBackoff, opts.AtHead = holderName(), a.Lease, a.RetryMax, a.Start == "head"
	opts.Poll, opts.MinBackoff, opts.Observer = a.Poll, a.RetryMin, obs
	r, err := delivery.NewRunner(db, sinks, opts)
	if err != nil {
		return nil, nil, err
	}
	if a.Require == "" {
		return r, nil, nil
	}
	g, err := delivery.NewGate(db, r, a.Require, a.RequireTimeout)
	return r, g, err
}
