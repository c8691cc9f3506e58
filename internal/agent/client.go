package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/agent/bitlocker"
	"github.com/keyward/keyward/internal/agent/wire"
)

// maxAnswer bounds what the agent reads of an answer. The biggest honest answer, a report's
// list of commands, is a few kilobytes; a server (or something posing as one) that sends more
// is cut off rather than allowed to fill the agent's memory.
const maxAnswer = 1 << 20

// requestTimeout bounds one request, connection included. Escrow answers only once the key is
// durable on the server, which takes milliseconds; a minute covers a slow link.
const requestTimeout = time.Minute

// ErrRevoked is returned when the server refuses the device token: it was revoked, or the
// device was deleted. The agent stops; it cannot do anything useful without a token.
var ErrRevoked = errors.New("the server refused the device token (it does not know this device): enroll again with keyward-agent enroll --force")

// ErrLocked is returned when another agent holds the state directory.
var ErrLocked = errors.New("another keyward-agent is running on this state directory (the service?)")

// APIError is an error answer of the server.
type APIError struct {
	Status  int
	Code    string
	Message string // the server's message; the server never puts key material in one
}

func (e *APIError) Error() string {
	s := fmt.Sprintf("server answered %d", e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// refused reports whether err is the server refusing a request for good: 400 (the agent sent
// something wrong) or 409 (it conflicts with what the server holds). Retrying the same request
// cannot help.
func refused(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && (ae.Status == http.StatusBadRequest || ae.Status == http.StatusConflict)
}

// client talks to the agent endpoints of one server.
type client struct {
	base      *url.URL
	token     string
	http      *http.Client
	userAgent string
}

// checkServerURL parses the server URL. It must be HTTPS, except on the loopback interface:
// the device token and every recovery password travel over it.
func checkServerURL(s string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimRight(strings.TrimSpace(s), "/"))
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, errors.New("the server URL must be like https://keyward.example.com")
	}
	if u.Scheme == "http" {
		ip := net.ParseIP(u.Hostname())
		if u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, errors.New("the server URL must be https: recovery passwords are sent to it (plain http is allowed on the loopback interface only)")
		}
	}
	return u, nil
}

// newHTTPClient builds the HTTP client: certificates verified against the system's roots and,
// when caFile is set, the PEM certificates in it (for a private CA); no redirects (an answer
// that moves the agent elsewhere is an error, not a place to send recovery passwords to); and a
// timeout on every request. base, when not nil, replaces the transport (tests wrap it).
func newHTTPClient(caFile string, base http.RoundTripper) (*http.Client, error) {
	rt := base
	if rt == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.Proxy = systemProxy()
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		if caFile != "" {
			pem, err := os.ReadFile(caFile)
			if err != nil {
				return nil, fmt.Errorf("reading the CA file: %w", err)
			}
			pool, err := x509.SystemCertPool()
			if err != nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("the CA file %s holds no PEM certificate", caFile)
			}
			tr.TLSClientConfig.RootCAs = pool
		}
		rt = tr
	}
	return &http.Client{
		Transport:     rt,
		Timeout:       requestTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}

// do sends one request and decodes a 2xx answer into out (when not nil). Error answers become
// *APIError, 401 becomes ErrRevoked; anything else (connection refused, dropped, timed out) is
// returned as it is, to be retried.
func (c *client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", c.userAgent)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, unwrapURLError(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if len(b) > maxAnswer {
		return fmt.Errorf("%s %s: the answer is larger than %d bytes", method, path, maxAnswer)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		ae := &APIError{Status: resp.StatusCode}
		var er wire.ErrorResponse
		if json.Unmarshal(b, &er) == nil {
			ae.Code, ae.Message = er.Error.Code, bitlocker.Redact(truncate(er.Error.Message, 300))
		}
		if resp.StatusCode == http.StatusUnauthorized && c.token != "" {
			return fmt.Errorf("%s %s: %w", method, path, ErrRevoked)
		}
		return fmt.Errorf("%s %s: %w", method, path, ae)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: the answer is not the JSON expected", method, path)
		}
	}
	return nil
}

// unwrapURLError drops the *url.Error wrapper, whose message repeats the method and URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func (c *client) enroll(ctx context.Context, req wire.EnrollRequest) (wire.EnrollResponse, error) {
	var out wire.EnrollResponse
	err := c.do(ctx, http.MethodPost, wire.PathEnroll, req, &out)
	return out, err
}

func (c *client) escrow(ctx context.Context, keyID string, req wire.EscrowRequest) error {
	return c.do(ctx, http.MethodPut, wire.PathKeys+url.PathEscape(keyID), req, nil)
}

func (c *client) report(ctx context.Context, rep wire.Report) ([]wire.Command, error) {
	var out wire.ReportResponse
	err := c.do(ctx, http.MethodPost, wire.PathReport, rep, &out)
	return out.Commands, err
}

func (c *client) commands(ctx context.Context) ([]wire.Command, error) {
	var out wire.CommandList
	err := c.do(ctx, http.MethodGet, wire.PathCommands, nil, &out)
	return out.Items, err
}

func (c *client) result(ctx context.Context, commandID string, res wire.CommandResult) error {
	return c.do(ctx, http.MethodPost, wire.PathCommands+"/"+url.PathEscape(commandID)+"/result", res, nil)
}
