package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/keyward/keyward/internal/api"
	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/metrics"
	"github.com/keyward/keyward/internal/notify"
	"github.com/keyward/keyward/internal/seal"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/web"
)

// Server is a running keyward server: storage, sealing and the HTTP listener. Tests start it
// on port 0 with a temporary data directory, exactly as `keyward serve` does.
type Server struct {
	DataDir       string
	DatabaseURL   string
	Listen        string
	MasterKeyFile string
	TLSCert       string
	TLSKey        string
	LogLevel      string
	JobsInterval  time.Duration
	// TrustedProxies are the reverse proxies whose X-Forwarded-For names the client.
	TrustedProxies string

	// The portal: where people reach it, and single sign-on with an OpenID Connect provider.
	PublicURL        string
	OIDCIssuer       string
	OIDCClientID     string
	OIDCClientSecret string
	OIDCRedirectURL  string
	OIDCScopes       string
	OIDCRoleClaim    string
	OIDCRoleMap      string
	OIDCDefaultRole  string

	// Delivery of the audit trail to a SIEM (delivery.go).
	Delivery auditDelivery
	// Email notifications (cmd/keyward/notify.go).
	Email emailFlags

	Log *slog.Logger
	Now func() time.Time

	db      *store.DB
	sealer  *seal.Sealer
	metrics *metrics.Metrics
	ln      net.Listener
	http    *http.Server

	runner     *delivery.Runner
	runnerDone chan struct{} // closed when the runner has stopped; nil while it is not running
	stopRunner context.CancelFunc
	// notifier is the audit trail's "email" sink; nil without --smtp-server.
	notifier *notify.Notifier
}

// NewServer returns a server with the defaults of `keyward serve`.
func NewServer() *Server {
	return &Server{DataDir: "./keyward-data", Listen: "127.0.0.1:8080", LogLevel: "info", JobsInterval: 30 * time.Second,
		OIDCScopes: "openid,email,profile,groups", OIDCRoleClaim: "groups", OIDCDefaultRole: "user",
		Delivery: defaultAuditDelivery(), Email: defaultEmailFlags()}
}

// ParseFlags reads the serve command's flags and environment.
func (s *Server) ParseFlags(args []string, getenv func(string) string) error {
	fs := newFlags("serve")
	fs.StringVar(&s.DataDir, "data-dir", s.DataDir, "directory for the database and master key")
	fs.StringVar(&s.DatabaseURL, "database-url", s.DatabaseURL, "PostgreSQL URL (postgres://...); the embedded SQLite database in --data-dir without it")
	fs.StringVar(&s.Listen, "listen", s.Listen, "address to listen on")
	fs.StringVar(&s.MasterKeyFile, "master-key-file", s.MasterKeyFile, "master key file (default DATA_DIR/master.key)")
	fs.StringVar(&s.TLSCert, "tls-cert", s.TLSCert, "TLS certificate file (PEM); plain HTTP without it")
	fs.StringVar(&s.TLSKey, "tls-key", s.TLSKey, "TLS private key file (PEM)")
	fs.StringVar(&s.LogLevel, "log-level", s.LogLevel, "debug, info, warn or error")
	fs.DurationVar(&s.JobsInterval, "jobs-interval", s.JobsInterval, "how often background jobs (purge, rotation timeouts, maximum key age) run; at most 1m")
	fs.StringVar(&s.TrustedProxies, "trusted-proxies", s.TrustedProxies, "comma-separated addresses or CIDR prefixes of reverse proxies whose X-Forwarded-For names the client (for the audit trail and rate limits)")
	fs.StringVar(&s.PublicURL, "public-url", s.PublicURL, "URL people reach the portal at (https://keyward.example.com); https marks cookies Secure and sends HSTS behind a TLS proxy")
	fs.StringVar(&s.OIDCIssuer, "oidc-issuer", s.OIDCIssuer, "OpenID Connect issuer URL for single sign-on; local accounts only without it")
	fs.StringVar(&s.OIDCClientID, "oidc-client-id", s.OIDCClientID, "client ID registered at the OpenID Connect provider")
	fs.StringVar(&s.OIDCClientSecret, "oidc-client-secret", s.OIDCClientSecret, "client secret (prefer KEYWARD_OIDC_CLIENT_SECRET: arguments are visible to other local users)")
	fs.StringVar(&s.OIDCRedirectURL, "oidc-redirect-url", s.OIDCRedirectURL, "callback URL registered at the provider (default PUBLIC_URL/signin/sso/callback)")
	fs.StringVar(&s.OIDCScopes, "oidc-scopes", s.OIDCScopes, "comma-separated scopes to ask for")
	fs.StringVar(&s.OIDCRoleClaim, "oidc-role-claim", s.OIDCRoleClaim, "ID token claim whose values map to roles")
	fs.StringVar(&s.OIDCRoleMap, "oidc-role-map", s.OIDCRoleMap, "claim values to roles, like kw-admins=admin,kw-helpdesk=helpdesk,kw-auditors=auditor")
	fs.StringVar(&s.OIDCDefaultRole, "oidc-default-role", s.OIDCDefaultRole, "role of a person whose claims map to none: user, auditor, helpdesk, admin, or none to refuse them")
	s.Delivery.flags(fs)
	s.Email.register(fs)
	if err := parse(fs, args, getenv); err != nil {
		return err
	}
	if err := s.Email.validate(); err != nil {
		return exitError{2, "serve: " + err.Error()}
	}
	if err := s.Delivery.check(); err != nil {
		return exitError{2, "serve: " + err.Error()}
	}
	if s.JobsInterval <= 0 || s.JobsInterval > time.Minute {
		return exitError{2, "serve: --jobs-interval must be more than 0 and at most 1m"}
	}
	if _, err := parseTrustedProxies(s.TrustedProxies); err != nil {
		return exitError{2, "serve: --trusted-proxies: " + err.Error()}
	}
	if (s.TLSCert == "") != (s.TLSKey == "") {
		return exitError{2, "serve: give both --tls-cert and --tls-key, or neither"}
	}
	return nil
}

// Open loads the master key, opens storage and binds the listener. On first start it creates
// the data directory, the database and the master key file.
func (s *Server) Open(ctx context.Context, logOut io.Writer) error {
	if s.Log == nil {
		var level slog.Level
		if err := level.UnmarshalText([]byte(s.LogLevel)); err != nil {
			return exitError{2, "serve: --log-level must be debug, info, warn or error"}
		}
		s.Log = slog.New(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: level}))
	}
	portalConfig, err := s.portalConfig()
	if err != nil {
		return err
	}
	keyFile := s.MasterKeyFile
	if keyFile == "" {
		keyFile = filepath.Join(s.DataDir, "master.key")
	}
	// A missing key file is created only for a new installation: beside an existing database
	// a new key would open nothing, and its creation would be logged as if all were well.
	if _, err := os.Stat(keyFile); errors.Is(err, os.ErrNotExist) {
		existing, err := store.Initialized(ctx, s.DatabaseURL, s.DataDir)
		if err != nil {
			return fmt.Errorf("checking for an existing database: %w", err)
		}
		if existing {
			return exitError{1, fmt.Sprintf("serve: the master key file %s is missing, but the database is already set up with a master key: "+
				"put this installation's master key file back (from where its backup is kept); without it no escrowed key can be read. Nothing was created", keyFile)}
		}
	}
	if err := os.MkdirAll(s.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	if err := store.CheckDataDir(s.DataDir); err != nil {
		return exitError{1, "serve: " + err.Error()}
	}
	sealer, created, err := seal.LoadOrCreate(keyFile)
	if err != nil {
		return err
	}
	if created {
		s.Log.Warn("created a new master key: back it up; without it no escrowed key can be read", slog.String("file", keyFile))
	}
	// The key file is read again when a rotation changes it; say so in the log.
	sealer.SetLogger(s.Log)
	s.sealer = sealer
	s.db, err = store.Open(ctx, s.DatabaseURL, s.DataDir, store.Options{Sealer: sealer, Now: s.Now})
	if err != nil {
		if errors.Is(err, seal.ErrWrongMasterKey) {
			return fmt.Errorf("master key file %s does not match the database: start with this installation's master key file (after a master-key rotation, the current copy of it)", keyFile)
		}
		return err
	}
	proxies, err := parseTrustedProxies(s.TrustedProxies)
	if err != nil {
		s.db.Close()
		return exitError{2, "serve: --trusted-proxies: " + err.Error()}
	}
	s.ln, err = net.Listen("tcp", s.Listen)
	if err != nil {
		s.db.Close()
		return fmt.Errorf("listen on %s: %w", s.Listen, err)
	}
	// One registry per server, shared by the API (which serves it at GET /metrics) and the
	// portal, so both count their routes in the same series.
	s.metrics = metrics.New(s.db, s.Log, metrics.Options{Now: s.Now})
	if s.notifier, err = s.notifySink(); err != nil {
		s.ln.Close()
		s.db.Close()
		return exitError{2, "serve: email: " + err.Error()}
	}
	var extra []delivery.Sink
	if s.notifier != nil {
		extra = append(extra, s.notifier) // the "email" sink
	}
	runner, gate, err := s.Delivery.runner(s.db, s.metrics, delivery.Options{Log: s.Log}, extra...)
	if err != nil {
		s.ln.Close()
		s.db.Close()
		return exitError{2, "serve: audit delivery: " + err.Error()}
	}
	// Disclosures go through the gate when delivery to a receiver is required.
	var disclosing interface {
		api.Store
		web.Store
	} = s.db
	if runner != nil {
		s.runner = runner
		s.metrics.UseDelivery(s.db, runner.Sinks(), s.Log)
	}
	if gate != nil {
		disclosing = gatedStore{DB: s.db, gate: gate}
		s.Log.Info("fail closed: key material is disclosed only once its key.read event reached the receiver", slog.String("sink", gate.Sink()))
	}
	portal, err := web.New(disclosing, s.Log, portalConfig)
	if err != nil {
		s.ln.Close()
		s.db.Close()
		return err
	}
	apiServer := api.New(disclosing, s.Log)
	apiServer.UseMetrics(s.metrics)
	portal.UseMetrics(s.metrics)
	s.http = &http.Server{
		Handler:           clientAddress(proxies, logRequests(s.Log, web.Mount(apiServer.Handler(), portal.Handler()))),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.Log.Handler(), slog.LevelWarn),
	}
	return nil
}

// portalConfig turns the portal's flags into its configuration. Single sign-on is on when an
// issuer is given; a person whose claims map to no role gets --oidc-default-role (user by
// default, so that everyone can use self-service), or is refused with "none".
func (s *Server) portalConfig() (web.Config, error) {
	cfg := web.Config{PublicURL: s.PublicURL, Now: s.Now}
	if s.OIDCIssuer == "" {
		if err := cfg.Validate(); err != nil {
			return cfg, exitError{2, "serve: " + err.Error()}
		}
		return cfg, nil
	}
	roles, err := web.ParseRoleMap(s.OIDCRoleMap)
	if err != nil {
		return cfg, exitError{2, "serve: --oidc-role-map: " + err.Error()}
	}
	def := escrow.Role(s.OIDCDefaultRole)
	if s.OIDCDefaultRole == "none" {
		def = ""
	} else if !def.Valid() {
		return cfg, exitError{2, "serve: --oidc-default-role must be user, auditor, helpdesk, admin or none"}
	}
	var scopes []string
	for sc := range strings.SplitSeq(s.OIDCScopes, ",") {
		if sc = strings.TrimSpace(sc); sc != "" {
			scopes = append(scopes, sc)
		}
	}
	cfg.SSO = &web.SSOConfig{Issuer: s.OIDCIssuer, ClientID: s.OIDCClientID, ClientSecret: s.OIDCClientSecret,
		RedirectURL: s.OIDCRedirectURL, Scopes: scopes, RoleClaim: s.OIDCRoleClaim, RoleMap: roles, DefaultRole: def}
	if err := cfg.Validate(); err != nil {
		return cfg, exitError{2, "serve: " + err.Error()}
	}
	return cfg, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the server's base URL.
func (s *Server) URL() string {
	scheme := "http"
	if s.TLSCert != "" {
		scheme = "https"
	}
	return scheme + "://" + s.Addr()
}

// Serve answers requests until ctx is done, then shuts down gracefully: it stops accepting,
// lets requests in flight finish (up to 15 s) and closes the database.
func (s *Server) Serve(ctx context.Context) error {
	s.Log.Info("keyward serving", slog.String("addr", s.URL()), slog.String("database", s.db.Dialect()))
	if err := s.announceSetup(ctx); err != nil {
		s.Log.Error("could not make a setup link; run keyward setup-link", slog.String("error", err.Error()))
	}
	jobsCtx, stopJobs := context.WithCancel(ctx)
	defer stopJobs()
	if s.runner != nil {
		rctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		s.stopRunner, s.runnerDone = stop, make(chan struct{})
		go func() {
			defer close(s.runnerDone)
			s.runner.Run(rctx)
		}()
	}
	go s.db.RunJobsEvery(jobsCtx, s.JobsInterval, func(res store.JobResult, err error) {
		s.metrics.ObserveJobs(metrics.Jobs{Purged: res.Purged, TimedOut: res.TimedOut, AgeRotations: res.AgeRotations}, err)
		if err != nil {
			s.Log.Error("background jobs failed", slog.String("error", err.Error()))
			return
		}
		if res != (store.JobResult{}) {
			s.Log.Info("background jobs", slog.Int("purged", res.Purged), slog.Int("rotationsTimedOut", res.TimedOut),
				slog.Int("maxKeyAgeRotations", res.AgeRotations), slog.Int("statusesSettled", res.Settled))
		}
	})
	// SIGHUP re-reads the master key file: after copying a rotated file to this server, the
	// operator need not wait for the server to notice it.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-jobsCtx.Done():
				return
			case <-hup:
				// Reload logs the outcome itself.
				_ = s.sealer.Reload()
			}
		}
	}()
	errc := make(chan error, 1)
	go func() {
		var err error
		if s.TLSCert != "" {
			err = s.http.ServeTLS(s.ln, s.TLSCert, s.TLSKey)
		} else {
			err = s.http.Serve(s.ln)
		}
		errc <- err
	}()
	select {
	case err := <-errc:
		return errors.Join(err, s.Close())
	case <-ctx.Done():
	}
	s.Log.Info("shutting down")
	stopJobs()
	return s.Close()
}

// Close stops the server gracefully and closes storage.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var err error
	if s.http != nil {
		err = s.http.Shutdown(ctx)
	}
	// The runner stops after the last request and releases its leases before the database
	// closes; what it had not delivered goes from the cursor at the next start, or from another
	// server.
	if s.runnerDone != nil {
		s.stopRunner()
		<-s.runnerDone
		s.runnerDone = nil
	}
	if s.db != nil {
		err = errors.Join(err, s.db.Close())
	}
	return err
}

func runServe(ctx context.Context, args []string, env cliEnv) error {
	s := NewServer()
	if err := s.ParseFlags(args, env.getenv); err != nil {
		return err
	}
	if err := s.Open(ctx, env.stderr); err != nil {
		return err
	}
	return s.Serve(ctx)
}

// statusRecorder remembers the status a handler wrote, for the request log.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// logRequests logs one line per request: method, path, status, duration. Never the query string
// or headers: they can carry tokens or reasons people typed.
func logRequests(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			log.LogAttrs(r.Context(), slog.LevelInfo, "request", slog.String("method", r.Method), slog.String("path", r.URL.Path),
				slog.Int("status", rec.status), slog.Duration("duration", time.Since(start)), slog.String("remote", r.RemoteAddr))
		}()
		next.ServeHTTP(rec, r)
	})
}
