package delivery

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/escrow"
)

// SignatureHeader carries the webhook's signature: "t=<unix seconds>,v1=<hex HMAC-SHA256>",
// the HMAC taken under the shared secret over the timestamp, a full stop and the body
// ("<t>." + body). A receiver recomputes it, compares in constant time and refuses a timestamp
// too far from its clock, so a recorded request cannot be replayed later.
const SignatureHeader = "Keyward-Signature"

// MinSecret is the shortest webhook secret accepted, in bytes.
const MinSecret = 32

// WebhookConfig configures the webhook sink.
type WebhookConfig struct {
	URL string // https://…
	// Secret keys the signature; at least MinSecret bytes.
	Secret []byte
	// CAFile holds the PEM certificates that may sign the receiver's certificate; the system
	// pool without it.
	CAFile string
	// Timeout bounds one request (default 10 s).
	Timeout time.Duration
	// Now is the clock of the signature's timestamp (default time.Now).
	Now func() time.Time
}

// Webhook is the webhook sink: each batch is one HTTPS POST of NDJSON, the audit export's
// encoding (one event per line), signed. A 2xx answer accepts the whole batch; anything else,
// or no answer, accepts none of it.
type Webhook struct {
	url    string
	secret []byte
	client *http.Client
	now    func() time.Time
}

// NewWebhook checks cfg and returns the sink.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" {
		return nil, fmt.Errorf("webhook: %q is not an https:// URL", cfg.URL)
	}
	if len(cfg.Secret) < MinSecret {
		return nil, fmt.Errorf("webhook: the secret must be at least %d bytes", MinSecret)
	}
	roots, err := loadCAFile("webhook", cfg.CAFile)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	tr.Proxy = nil // the receiver is named exactly; an environment proxy would see every event
	return &Webhook{url: u.String(), secret: bytes.Clone(cfg.Secret), now: cfg.Now,
		client: &http.Client{Transport: tr, Timeout: cfg.Timeout,
			// A redirect would resend the trail to where the receiver points, unchecked.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}, nil
}

// ReadSecretFile reads a webhook secret from a file: its content without trailing line breaks.
// The secret comes from a file and never a flag, because arguments show in the process list.
func ReadSecretFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("webhook secret file: %w", err)
	}
	b = bytes.TrimRight(b, "\r\n")
	if len(b) < MinSecret {
		return nil, fmt.Errorf("webhook secret file %s: the secret must be at least %d bytes (try: head -c 32 /dev/urandom | base64)", path, MinSecret)
	}
	return b, nil
}

// Name is "webhook".
func (w *Webhook) Name() string { return "webhook" }

// Deliver posts the events as one NDJSON body.
func (w *Webhook) Deliver(ctx context.Context, events []escrow.AuditEvent) (int, error) {
	var body bytes.Buffer
	aw, err := audit.NewWriter(audit.FormatNDJSON, &body)
	if err != nil {
		return 0, err
	}
	for _, e := range events {
		if err := aw.Write(e); err != nil {
			return 0, err
		}
	}
	if err := aw.Close(""); err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body.Bytes()))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", audit.ContentType(audit.FormatNDJSON))
	req.Header.Set("User-Agent", "keyward")
	req.Header.Set(SignatureHeader, Sign(w.secret, w.now(), body.Bytes()))
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("webhook: %w", redact(err))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return 0, fmt.Errorf("webhook: the receiver answered %s", resp.Status)
	}
	return len(events), nil
}

// redact keeps the URL out of a client error: its query could hold a receiver's token.
func redact(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// Sign returns the SignatureHeader value for body at time t.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(signature(secret, ts, body))
}

func signature(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Verify checks a SignatureHeader value against body: the signature must match (compared in
// constant time) and its timestamp be within skew of now. Receivers written in Go can use it.
func Verify(secret []byte, header string, body []byte, now time.Time, skew time.Duration) error {
	var ts, sig string
	for part := range strings.SplitSeq(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	t, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("webhook signature: no timestamp")
	}
	got, err := hex.DecodeString(sig)
	if err != nil || len(got) != sha256.Size {
		return errors.New("webhook signature: no v1 signature")
	}
	if !hmac.Equal(got, signature(secret, ts, body)) {
		return errors.New("webhook signature: does not match")
	}
	if d := now.Sub(time.Unix(t, 0)); d > skew || d < -skew {
		return errors.New("webhook signature: timestamp too far from now")
	}
	return nil
}
