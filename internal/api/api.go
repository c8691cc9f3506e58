// Package api is Keyward's JSON API: the four key endpoints of the original design, devices,
// reports, enrollment tokens and the agent endpoints. Every route goes through authentication
// and an authorization backstop: a handler that answers with success without having checked
// authorization is turned into a 500, so a forgotten check fails closed.
package api

import (
	"context"
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

	Enroll(ctx context.Context, o escrow.Origin, enrollToken escrow.Token, en escrow.Enrollment) (escrow.Enrolled, error)
	Escrow(ctx context.Context, o escrow.Origin, deviceID string, req escrow.EscrowRequest) (created bool, err error)
	ApplyReport(ctx context.Context, o escrow.Origin, deviceID string, r escrow.Report) ([]escrow.Command, error)
	Commands(ctx context.Context, o escrow.Origin, deviceID string) ([]escrow.Command, error)
	FinishCommand(ctx context.Context, o escrow.Origin, deviceID, commandID string, res escrow.CommandResult) error

	ListKeys(ctx context.Context, o escrow.Origin, f escrow.KeyFilter) ([]escrow.RecoveryKey, string, error)
	Disclose(ctx context.Context, o escrow.Origin, deviceID, reason string, allowed func(escrow.Device, escrow.Settings) bool) (escrow.Disclosure, error)
	RequestRotation(ctx context.Context, o escrow.Origin, deviceID, volumeID, reason string, allowed func(escrow.Device) bool) ([]escrow.Rotation, error)
	ListAudit(ctx context.Context, f escrow.AuditFilter, fn func(escrow.AuditEvent) error) error
	ListDevices(ctx context.Context, f escrow.DeviceFilter) ([]escrow.DeviceDetail, string, error)
	GetDevice(ctx context.Context, p escrow.Principal, id string) (escrow.DeviceDetail, error)
	CreateEnrollmentToken(ctx context.Context, o escrow.Origin, uses int64, validFor time.Duration) (escrow.EnrollmentToken, error)
	Settings(ctx context.Context) (escrow.Settings, error)
	UpdateSettings(ctx context.Context, o escrow.Origin, change map[string]string) (escrow.Settings, error)
	EscrowReport(ctx context.Context, scope escrow.Scope) (escrow.EscrowReport, error)
}

// Server serves the API.
type Server struct {
	store Store
	log   *slog.Logger
}

// New returns an API server on the store, logging to log.
func New(store Store, log *slog.Logger) *Server {
	return &Server{store: store, log: log}
}

// Handler returns the API's routes. Every route names its method, and literal paths win over
// wildcards (GET .../keys/audit is the audit log, not a device called "audit").
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /healthz", s.public(s.healthz))
	mux.Handle("GET /readyz", s.public(s.readyz))

	mux.Handle("GET /api/devices/security/bitlocker/keys", s.person(s.keysList))
	mux.Handle("GET /api/devices/security/bitlocker/keys/audit", s.person(s.keysAudit))
	mux.Handle("GET /api/devices/security/bitlocker/keys/{deviceId}", s.person(s.keysView))
	mux.Handle("POST /api/devices/security/bitlocker/keys/{deviceId}/rotate", s.person(s.keysRotate))
	mux.Handle("GET /api/devices", s.person(s.devicesList))
	mux.Handle("GET /api/devices/{deviceId}", s.person(s.devicesGet))
	mux.Handle("POST /api/enrollment-tokens", s.person(s.enrollmentTokensCreate))
	mux.Handle("GET /api/settings", s.person(s.settingsGet))
	mux.Handle("PUT /api/settings", s.person(s.settingsPut))
	mux.Handle("GET /api/reports/escrow", s.person(s.reportsEscrow))

	mux.Handle("POST /api/agent/enroll", s.public(s.agentEnroll))
	mux.Handle("PUT /api/agent/keys/{keyId}", s.device(s.agentEscrow))
	mux.Handle("POST /api/agent/report", s.device(s.agentReport))
	mux.Handle("GET /api/agent/commands", s.device(s.agentCommands))
	mux.Handle("POST /api/agent/commands/{id}/result", s.device(s.agentCommandResult))

	mux.Handle("/api/", s.public(func(w http.ResponseWriter, r *http.Request) error {
		return escrow.Errorf(escrow.CodeNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path)
	}))
	return securityHeaders(mux)
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
