// Package web is Keyward's portal: the pages people use in a browser. Admins, helpdesk and
// auditors find devices, view recovery keys with a recorded reason, request rotations, read
// the audit trail and the escrow report, and manage settings, users and tokens; everyone else
// uses self-service at /my to get the recovery key of their own computer, usually from a phone
// while the PC shows the BitLocker recovery screen.
//
// Pages are rendered on the server from embedded templates, parsed once at start; the only
// script is the Copy button's, so everything else works without JavaScript. Every answer
// carries a strict Content-Security-Policy; every state-changing request must come from the
// portal's own origin; sessions live in the database. Like the JSON API, every route runs
// under an authorization backstop: a handler that answers with success without having checked
// authorization is turned into a 500, so a forgotten check fails closed.
package web

import (
	"context"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/password"
)

// Store is what the portal needs from storage.
type Store interface {
	Record(ctx context.Context, e escrow.AuditEvent) error

	UserCredentials(ctx context.Context, email string) (escrow.User, string, error)
	StartSession(ctx context.Context, o escrow.Origin, userID string, tokenHash []byte, method string, maxAge time.Duration) error
	SignInDenied(ctx context.Context, o escrow.Origin, detail string) error
	SessionPrincipal(ctx context.Context, tokenHash []byte, idle time.Duration) (escrow.Principal, error)
	EndSession(ctx context.Context, o escrow.Origin, tokenHash []byte) error
	SSOUser(ctx context.Context, o escrow.Origin, s escrow.SSOSignOn) (escrow.User, error)
	SaveSSOLogin(ctx context.Context, stateHash []byte, l escrow.SSOLogin, ttl time.Duration) error
	TakeSSOLogin(ctx context.Context, stateHash []byte) (escrow.SSOLogin, error)
	NeedsSetup(ctx context.Context) (bool, error)
	CheckSetupLink(ctx context.Context, tokenHash []byte) error
	CompleteSetup(ctx context.Context, o escrow.Origin, tokenHash []byte, nu escrow.NewUser) (escrow.User, error)
	PromoteFirstAdmin(ctx context.Context, o escrow.Origin, tokenHash []byte, userID string) (escrow.User, error)
	HitRateLimit(ctx context.Context, bucket string, limit int, window time.Duration) (time.Duration, error)
	HitRateLimits(ctx context.Context, window time.Duration, limits map[string]int) (time.Duration, error)
	UndoRateLimit(ctx context.Context, bucket string) error

	SearchDevices(ctx context.Context, o escrow.Origin, f escrow.DeviceFilter, text string) ([]escrow.DeviceDetail, string, error)
	ListDevices(ctx context.Context, f escrow.DeviceFilter) ([]escrow.DeviceDetail, string, error)
	GetDevice(ctx context.Context, p escrow.Principal, id string) (escrow.DeviceDetail, error)
	RetireDevice(ctx context.Context, o escrow.Origin, deviceID, reason string) (escrow.DeviceDetail, error)
	UpdateDevice(ctx context.Context, o escrow.Origin, deviceID string, ch escrow.DeviceChange) (escrow.DeviceDetail, error)
	DeviceRotations(ctx context.Context, p escrow.Principal, deviceID string, limit int) ([]escrow.Rotation, error)
	ListKeys(ctx context.Context, o escrow.Origin, f escrow.KeyFilter) ([]escrow.RecoveryKey, string, error)
	Disclose(ctx context.Context, o escrow.Origin, deviceID string, a escrow.Access, allowed func(escrow.Device, escrow.Settings) bool) (escrow.Disclosure, error)
	RequestRotation(ctx context.Context, o escrow.Origin, deviceID, volumeID string, a escrow.Access, allowed func(escrow.Device) bool) ([]escrow.Rotation, error)
	DecideApproval(ctx context.Context, o escrow.Origin, id string, approve bool, reason string, allowed func(escrow.Device) bool) (escrow.Approval, error)
	ListApprovals(ctx context.Context, f escrow.ApprovalFilter) ([]escrow.Approval, string, error)
	CountPendingApprovals(ctx context.Context, scope escrow.Scope, requester string) (int, error)

	ListAudit(ctx context.Context, f escrow.AuditFilter, fn func(escrow.AuditEvent) error) error
	StreamEscrowReport(ctx context.Context, scope escrow.Scope, page escrow.ReportPage,
		head func(escrow.EscrowReport) error, fn func(escrow.ReportProblem) error) (escrow.EscrowReport, error)
	Settings(ctx context.Context) (escrow.Settings, error)
	UpdateSettings(ctx context.Context, o escrow.Origin, change map[string]string) (escrow.Settings, error)
	ListUsers(ctx context.Context) ([]escrow.User, error)
	CreateUser(ctx context.Context, o escrow.Origin, nu escrow.NewUser) (escrow.User, error)
	SetUserRole(ctx context.Context, o escrow.Origin, userID string, role escrow.Role, scopeTags []string) (escrow.User, error)
	UpdateUser(ctx context.Context, o escrow.Origin, userID string, ch escrow.UserChange) (escrow.User, error)
	CreateAPIToken(ctx context.Context, o escrow.Origin, email, name string) (escrow.Token, error)
	CreateEnrollmentToken(ctx context.Context, o escrow.Origin, uses int64, validFor time.Duration) (escrow.EnrollmentToken, error)
	ListAPITokens(ctx context.Context, email string) ([]escrow.APIToken, error)
	RevokeAPIToken(ctx context.Context, o escrow.Origin, id, owner string) error
	ListEnrollmentTokens(ctx context.Context) ([]escrow.EnrollmentTokenInfo, error)
	RevokeEnrollmentToken(ctx context.Context, o escrow.Origin, id string) error
}

// Config configures the portal. The zero Config is usable: local sign-in only, the default
// timeouts and limits, cookies marked Secure whenever the request came over TLS.
type Config struct {
	// PublicURL is where people reach the portal (https://keyward.example.com). When it is
	// https, cookies are always Secure and HSTS is sent, also behind a proxy that ends TLS.
	PublicURL string
	// SSO turns on single sign-on with an OpenID Connect provider; nil: local accounts only.
	SSO *SSOConfig

	// SessionIdle ends a session nobody has used for this long (default 30 minutes);
	// SessionMaxAge ends every session this long after sign-in (default 12 hours).
	SessionIdle   time.Duration
	SessionMaxAge time.Duration

	// Now is the clock (time.Now when nil); incident mode ends by it. The rate limits are
	// settings (escrow.Settings), changed at run time.
	Now func() time.Time
	// PasswordChecks bounds the password checks running at once; nil: one per CPU, at most 3,
	// with a short queue (password.NewChecker).
	PasswordChecks *password.Checker
}

func (c *Config) setDefaults() {
	if c.SessionIdle <= 0 {
		c.SessionIdle = 30 * time.Minute
	}
	if c.SessionMaxAge <= 0 {
		c.SessionMaxAge = 12 * time.Hour
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.PasswordChecks == nil {
		c.PasswordChecks = password.NewChecker(0, -1, 0)
	}
}

// Server serves the portal.
type Server struct {
	store  Store
	log    *slog.Logger
	cfg    Config
	views  map[view]*template.Template
	assets *assets
	sso    *ssoClient // nil: single sign-on is off
	// httpsOnly is set when the public URL is https: cookies are Secure and HSTS is sent even
	// when TLS ends at a proxy in front of the server.
	httpsOnly bool

	// timingHash is a password hash that sign-in verifies against when the account does not
	// exist or has no password, so that the answer takes as long as for a wrong password.
	timingOnce sync.Once
	timingHash string
	// passwords bounds the argon2id work running at once: each check holds 64 MiB.
	passwords *password.Checker

	metrics Metrics // nil: no instrumentation
}

// Metrics is what the portal needs from the server's metrics: a wrapper that counts and times
// each route's requests under the route's pattern.
type Metrics interface {
	Instrument(pattern string, next http.Handler) http.Handler
}

// UseMetrics instruments every route with m. Call it before Handler.
func (s *Server) UseMetrics(m Metrics) { s.metrics = m }

// Validate checks the configuration without starting anything, so that a command can refuse
// bad flags before it creates a data directory or opens a database.
func (c Config) Validate() error {
	_, _, err := c.check()
	return err
}

// check validates the configuration and returns whether the public URL is https and the single
// sign-on client (nil when single sign-on is off).
func (c Config) check() (httpsOnly bool, sso *ssoClient, err error) {
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return false, nil, fmt.Errorf("public URL %q: must be like https://keyward.example.com", c.PublicURL)
		}
		httpsOnly = u.Scheme == "https"
	}
	if c.SSO != nil {
		if sso, err = newSSOClient(*c.SSO, c.PublicURL); err != nil {
			return false, nil, err
		}
	}
	return httpsOnly, sso, nil
}

// New returns the portal on the store. It parses every template and checks every static file
// now, so that a broken build stops at start-up rather than on the first request.
func New(store Store, log *slog.Logger, cfg Config) (*Server, error) {
	cfg.setDefaults()
	s := &Server{store: store, log: log, cfg: cfg, passwords: cfg.PasswordChecks}
	var err error
	if s.httpsOnly, s.sso, err = cfg.check(); err != nil {
		return nil, err
	}
	if s.assets, err = loadAssets(); err != nil {
		return nil, err
	}
	if s.views, err = parseViews(s.assets); err != nil {
		return nil, err
	}
	return s, nil
}

// Mount joins the JSON API and the portal into the server's one handler: the API keeps its
// paths (/api/, /healthz, /readyz, /metrics), and every other path is the portal's. The two stay
// separate handlers with their own headers: the API refuses what browsers send, the portal
// speaks HTML.
func Mount(api, portal http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/api/", api)
	mux.Handle("/healthz", api)
	mux.Handle("/readyz", api)
	mux.Handle("/metrics", api)
	mux.Handle("/", portal)
	return mux
}

// isStaff reports whether the principal may use the admin portal at all.
func isStaff(p escrow.Principal) bool {
	return p.Role == escrow.RoleAdmin || p.Role == escrow.RoleHelpdesk || p.Role == escrow.RoleAuditor
}

// homeFor is where a principal lands after sign-in.
func homeFor(p escrow.Principal) string {
	if isStaff(p) {
		return "/devices"
	}
	return "/my"
}

// localPath returns next if it is a path on this site, else "": a sign-in must never send the
// browser to another site (an open redirect makes phishing links look like ours).
func localPath(next string) string {
	if next == "" || len(next) > 1024 || next[0] != '/' || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n\t") {
		return ""
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" {
		return ""
	}
	return next
}
