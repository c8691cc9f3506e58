package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/api"
	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/metrics"
	"github.com/keyward/keyward/internal/seal"
	"github.com/keyward/keyward/internal/store"
	"github.com/keyward/keyward/internal/testkit"
)

// env is a real API server on a real SQLite file.
type env struct {
	t      testing.TB
	dir    string
	db     *store.DB
	srv    *httptest.Server
	clock  *testkit.Clock
	logs   *testkit.Buffer
	master []byte
	admin  string // an admin's API token
}

func newEnv(t testing.TB) *env {
	t.Helper()
	master, err := seal.Generate()
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := seal.New(master)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: t.TempDir(), clock: testkit.NewClock(time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)), logs: &testkit.Buffer{}, master: master}
	e.db, err = store.OpenSQLite(context.Background(), e.dir, store.Options{Sealer: sealer, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// Instrumented as serve.go does, so every API test also runs through the metrics.
	srv := api.New(e.db, log)
	srv.UseMetrics(metrics.New(e.db, log, metrics.Options{Now: e.clock.Now}))
	e.srv = httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		e.srv.Close()
		e.db.Close()
	})
	e.admin = e.person(escrow.RoleAdmin, "admin@example.com")
	return e
}

// person creates a user with the role and returns an API token for them.
func (e *env) person(role escrow.Role, email string, scopeTags ...string) string {
	e.t.Helper()
	o := escrow.Origin{Actor: escrow.Actor{Type: escrow.ActorSystem, ID: "test"}, Source: escrow.SourceCLI}
	if _, err := e.db.CreateUser(context.Background(), o, escrow.NewUser{Email: email, Role: role, ScopeTags: scopeTags}); err != nil {
		e.t.Fatal(err)
	}
	tok, err := e.db.CreateAPIToken(context.Background(), o, email, "test")
	if err != nil {
		e.t.Fatal(err)
	}
	return tok.String()
}

type response struct {
	status int
	body   []byte
	header http.Header
}

func (r response) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("answer is not JSON (%v): %s", err, r.body)
	}
}

func (r response) errorCode(t testing.TB) string {
	t.Helper()
	var b struct {
		Error struct{ Code, Message string }
	}
	r.json(t, &b)
	return b.Error.Code
}

func (r response) errorMessage(t testing.TB) string {
	t.Helper()
	var b struct {
		Error struct{ Code, Message string }
	}
	r.json(t, &b)
	return b.Error.Message
}

// do sends a request; body is JSON-encoded unless it is a string or nil.
func (e *env) do(method, path, token string, body any) response {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("User-Agent", "keyward-test/1")
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{status: res.StatusCode, body: b, header: res.Header}
}

func (e *env) must(want int, r response) response {
	e.t.Helper()
	if r.status != want {
		e.t.Fatalf("status %d, want %d: %s", r.status, want, r.body)
	}
	return r
}

type device struct {
	ID              string `json:"deviceId"`
	Token           string `json:"deviceToken"`
	VerificationKey string `json:"verificationKey"`
}

// enroll enrolls a device through the API with a fresh enrollment token.
func (e *env) enroll(hostname, owner string) device {
	e.t.Helper()
	var tok struct{ ID, Token string }
	e.must(201, e.do("POST", "/api/enrollment-tokens", e.admin, map[string]any{"uses": 1})).json(e.t, &tok)
	var d device
	e.must(201, e.do("POST", "/api/agent/enroll", "", map[string]any{
		"enrollmentToken": tok.Token, "hostname": hostname, "serialNumber": "SN-" + hostname, "osVersion": "10.0.22631", "ownerUpn": owner,
	})).json(e.t, &d)
	return d
}

func escrowBody(volumeID, password string) map[string]any {
	return map[string]any{"volumeId": volumeID, "mountPoint": "C:", "volumeType": "operatingSystem", "kind": "recoveryPassword", "recoveryPassword": password}
}

type volumeReport struct {
	VolumeID         string           `json:"volumeId"`
	MountPoint       string           `json:"mountPoint"`
	VolumeType       string           `json:"volumeType"`
	ProtectionStatus string           `json:"protectionStatus"`
	EncryptionStatus string           `json:"encryptionStatus"`
	LockStatus       string           `json:"lockStatus,omitempty"`
	KeyProtectors    []map[string]any `json:"keyProtectors"`
}

// report sends a report with the given volumes and no events.
func (e *env) report(d device, vols ...volumeReport) response {
	e.t.Helper()
	for i := range vols {
		if vols[i].KeyProtectors == nil {
			vols[i].KeyProtectors = []map[string]any{}
		}
	}
	return e.must(200, e.do("POST", "/api/agent/report", d.Token, map[string]any{"volumes": vols}))
}

// auditEvents returns the audit log as records, newest first.
func (e *env) auditEvents(query string) []auditRecord {
	e.t.Helper()
	var out struct{ Items []auditRecord }
	e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys/audit?limit=1000&"+query, e.admin, nil)).json(e.t, &out)
	return out.Items
}

type auditRecord struct {
	Seq                                                                     int64
	Actor                                                                   struct{ Type, ID, Name string }
	Action, DeviceID, KeyID, Source, Reason, Outcome, IP, UserAgent, Detail string
}

type keyItem struct {
	KeyID, DeviceID, DeviceName, VolumeID, MountPoint, VolumeType, Kind, Status, Verification string
	RecoveryPassword                                                                          string
	RecoveryKey                                                                               string
	AccessCount                                                                               int64
	RetainUntil                                                                               *time.Time
}
