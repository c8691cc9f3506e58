// Package api is Keyward's JSON API: the four key endpoints of the original design, devices,
// reports, enrollment tokens, users, API tokens and the agent endpoints. Every route goes through authentication
// and an authorization backstop: a handler that answers with success without having checked
// authorization is turned into a 500, so a forgotten check fails closed.
package api

import (
	"context"
	_ "embed"
	"log/slog"
	"net/http"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// Store is what the API needs from storage.
type Store interface {
	Ping(ctx context.Context) error
	AuthenticateAPIToken(ctx context.Context, tok escrow.Token) (escrow.Principal, error)
	AuthenticateDevice(ctx context.Context, tok escrow.Token) (escrow.Principal, error)
	Record(ctx context.Context, e escrow.AuditEvent) error
	HitRateLimit(ctx context.Context, bucket string, limit int, window time.Duration) (time.Duration, error)
	UndoRateLimit(ctx context.Context, bucket string) error

	Enroll(ctx context.Context, o escrow.Origin, enrollToken escrow.Token, en escrow.Enrollment) (escrow.Enrolled, error)
	Escrow(ctx context.Context, o escrow.Origin, deviceID string, req escrow.EscrowRequest) (created bool, err error)
	ApplyReport(ctx context.Context, o escrow.Origin, deviceID string, r escrow.Report) ([]escrow.Command, error)
	Commands(ctx context.Context, o escrow.Origin, deviceID string) ([]escrow.Command, error)
	FinishCommand(ctx context.Context, o escrow.Origin, deviceID, commandID string, res escrow.CommandResult) error

	ListKeys(ctx context.Context, o escrow.Origin, f escrow.KeyFilter) ([]escrow.RecoveryKey, string, error)
	Disclose(ctx context.Context, o escrow.Origin, deviceID string, a escrow.Access, allowed func(escrow.Device, escrow.Settings) bool) (escrow.Disclosure, error)
	RequestRotation(ctx context.Context, o escrow.Origin, deviceID, volumeID string, a escrow.Access, allowed func(escrow.Device) bool) ([]escrow.Rotation, error)
	RequestApproval(ctx context.Context, o escrow.Origin, deviceID string, a escrow.Access, allowed func(escrow.Device, escrow.Settings) bool) (escrow.Approval, bool, error)
	DecideApproval(ctx context.Context, o escrow.Origin, id string, approve bool, reason string, allowed func(escrow.Device) bool) (escrow.Approval, error)
	ListApprovals(ctx context.Context, f escrow.ApprovalFilter) ([]escrow.Approval, string, error)
	ListAudit(ctx context.Context, f escrow.AuditFilter, fn func(escrow.AuditEvent) error) error
	ListDevices(ctx context.Context, f escrow.DeviceFilter) ([]escrow.DeviceDetail, string, error)
	GetDevice(ctx context.Context, p escrow.Principal, id string) (escrow.DeviceDetail, error)
	RetireDevice(ctx context.Context, o escrow.Origin, deviceID, reason string) (escrow.DeviceDetail, error)
	UpdateDevice(ctx context.Context, o escrow.Origin, deviceID string, ch escrow.DeviceChange) (escrow.DeviceDetail, error)
	CreateEnrollmentToken(ctx context.Context, o escrow.Origin, uses int64, validFor time.Duration) (escrow.EnrollmentToken, error)
	ListEnrollmentTokens(ctx context.Context) ([]escrow.EnrollmentTokenInfo, error)
	RevokeEnrollmentToken(ctx context.Context, o escrow.Origin, id string) error
	ListUsers(ctx context.Context) ([]escrow.User, error)
	CreateUser(ctx context.Context, o escrow.Origin, nu escrow.NewUser) (escrow.User, error)
	UpdateUser(ctx context.Context, o escrow.Origin, userID string, ch escrow.UserChange) (escrow.User, error)
	ListAPITokens(ctx context.Context, email string) ([]escrow.APIToken, error)
	CreateAPIToken(ctx context.Context, o escrow.Origin, email, name string) (escrow.Token, error)
	RevokeAPIToken(ctx context.Context, o escrow.Origin, id, owner string) error
	Settings(ctx context.Context) (escrow.Settings, error)
	UpdateSettings(ctx context.Context, o escrow.Origin, change map[string]string) (escrow.Settings, error)
	StreamEscrowReport(ctx context.Context, scope escrow.Scope, page escrow.ReportPage,
		head func(escrow.EscrowReport) error, fn func(escrow.ReportProblem) error) (escrow.EscrowReport, error)
}

// Metrics is what the API needs from the server's metrics: the handler that writes them, served
// at GET /metrics to admins and auditors, and a wrapper that counts and times each route's
// requests under the route's pattern.
type Metrics interface {
	Handler() http.Handler
	Instrument(pattern string, next http.Handler) http.Handler
}

// Server serves the API.
type Server struct {
	store        Store
	log          *slog.Logger
	authFailures *failureLimiter // invalid tokens per client address (limit.go)
	metrics      Metrics         // nil: no instrumentation, and GET /metrics answers 404
}

// New returns an API server on the store, logging to log.
func New(store Store, log *slog.Logger) *Server {
	return &Server{store: store, log: log,
		authFailures: newFailureLimiter(authFailureLimit, authFailureWindow, authFailureAddresses, time.Now)}
}

// UseMetrics instruments every route with m and serves m at GET /metrics. Call it before
// Handler.
func (s *Server) UseMetrics(m Metrics) { s.metrics = m }

// route is one endpoint: its ServeMux pattern and its handler.
type route struct {
	pattern string
	handler http.Handler
}

// routes is the API's route table. Every route names its method, and literal paths win over
// wildcards (GET .../keys/audit is the audit log, not a device called "audit"). The OpenAPI
// document lists exactly these (a test holds them together).
func (s *Server) routes() []route {
	return []route{
		{"GET /healthz", s.public(s.healthz)},
		{"GET /readyz", s.public(s.readyz)},
		{"GET /api/openapi.json", s.public(s.openAPI)},
		{"GET /metrics", s.person(s.metricsGet)},

		{"GET /api/devices/security/bitlocker/keys", s.person(s.keysList)},
		{"GET /api/devices/security/bitlocker/keys/audit", s.person(s.keysAudit)},
		{"GET /api/devices/security/bitlocker/keys/{deviceId}", s.person(s.keysView)},
		{"POST /api/devices/security/bitlocker/keys/{deviceId}/rotate", s.person(s.keysRotate)},
		{"GET /api/devices", s.person(s.devicesList)},
		{"GET /api/devices/{deviceId}", s.person(s.devicesGet)},
		{"PATCH /api/devices/{deviceId}", s.person(s.devicesUpdate)},
		{"POST /api/devices/{deviceId}/retire", s.person(s.devicesRetire)},
		{"GET /api/enrollment-tokens", s.person(s.enrollmentTokensList)},
		{"POST /api/enrollment-tokens", s.person(s.enrollmentTokensCreate)},
		{"DELETE /api/enrollment-tokens/{id}", s.person(s.enrollmentTokensRevoke)},
		{"GET /api/users", s.person(s.usersList)},
		{"POST /api/users", s.person(s.usersCreate)},
		{"PATCH /api/users/{userId}", s.person(s.usersUpdate)},
		{"GET /api/tokens", s.person(s.tokensList)},
		{"POST /api/tokens", s.person(s.tokensCreate)},
		{"DELETE /api/tokens/{id}", s.person(s.tokensRevoke)},
		{"GET /api/settings", s.person(s.settingsGet)},
		{"PUT /api/settings", s.person(s.settingsPut)},
		{"GET /api/reports/escrow", s.person(s.reportsEscrow)},
		{"GET /api/approvals", s.person(s.approvalsList)},
		{"POST /api/approvals", s.person(s.approvalsCreate)},
		{"POST /api/approvals/{id}/approve", s.person(s.approvalsApprove)},
		{"POST /api/approvals/{id}/deny", s.person(s.approvalsDeny)},

		{"POST /api/agent/enroll", s.public(s.agentEnroll)},
		{"PUT /api/agent/keys/{keyId}", s.device(s.agentEscrow)},
		{"POST /api/agent/report", s.device(s.agentReport)},
		{"GET /api/agent/commands", s.device(s.agentCommands)},
		{"POST /api/agent/commands/{id}/result", s.device(s.agentCommandResult)},
	}
}

// Handler returns the API's handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	rs := append(s.routes(), route{"/api/", s.public(func(w http.ResponseWriter, r *http.Request) error {
		return escrow.Errorf(escrow.CodeNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path)
	})})
	for _, r := range rs {
		h := r.handler
		if s.metrics != nil {
			h = s.metrics.Instrument(r.pattern, h)
		}
		mux.Handle(r.pattern, h)
	}
	return securityHeaders(mux)
}

//go:embed openapi.json
var openAPIDocument []byte

// openAPI serves the OpenAPI document: the contract, readable without a token.
func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	_, err := w.Write(openAPIDocument)
	if err != nil {
		return errAborted
	}
	return nil
}

// securityHeaders sets the headers every API answer carries: nothing here is meant to be
// rendered, framed, sniffed or cached.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
