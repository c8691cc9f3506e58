package main

import (
	"bytes"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/keyward/keyward/internal/bitlockertest"
	"github.com/keyward/keyward/internal/recovery"
	"github.com/keyward/keyward/internal/seal"
)

// pgDatabase returns the URL of a fresh schema in the test PostgreSQL database, dropped when the
// test ends. The tests that need it skip where KEYWARD_TEST_POSTGRES_URL is not set; CI sets it.
func pgDatabase(t testing.TB) string {
	t.Helper()
	base := os.Getenv("KEYWARD_TEST_POSTGRES_URL")
	if base == "" {
		t.Skip("KEYWARD_TEST_POSTGRES_URL not set")
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("kw_ha_%d", time.Now().UnixNano())
	if _, err := admin.Exec(`CREATE SCHEMA ` + name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		admin.Exec(`DROP SCHEMA ` + name + ` CASCADE`)
		admin.Close()
	})
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + "search_path=" + name
}

// cluster is several keyward servers on one PostgreSQL database, sharing one master key.
type cluster struct {
	url, keyFile string
	servers      []*process
	admin        string
}

func newCluster(t testing.TB, dbURL string, n int, extra ...string) *cluster {
	t.Helper()
	c := &cluster{url: dbURL, keyFile: filepath.Join(t.TempDir(), "master.key")}
	master, err := seal.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.keyFile, master, 0o600); err != nil {
		t.Fatal(err)
	}
	for range n {
		c.servers = append(c.servers, serveProcess(t, append([]string{"--database-url", dbURL, "--master-key-file", c.keyFile, "--data-dir", t.TempDir()}, extra...)...))
	}
	c.admin = adminToken(t, dbURL, c.keyFile)
	return c
}

// adminToken creates an admin and an API token with the admin commands on the database.
func adminToken(t testing.TB, dbURL, keyFile string) string {
	t.Helper()
	run := func(args ...string) string {
		var out, errOut bytes.Buffer
		if code := Run(t.Context(), append(args, "--database-url", dbURL, "--master-key-file", keyFile), nil, &out, &errOut, func(string) string { return "" }); code != 0 {
			t.Fatalf("keyward %v: %d %s", args, code, errOut.String())
		}
		return strings.TrimSpace(out.String())
	}
	run("users", "add", "--email", "admin@example.com", "--role", "admin")
	return run("tokens", "create", "--user", "admin@example.com")
}

func enrollAt(t testing.TB, url, admin, hostname string) (id, token string) {
	t.Helper()
	var et struct{ Token string }
	if err := json.Unmarshal(mustCall(t, 201, "POST", url+"/api/enrollment-tokens", admin, `{"uses":1}`), &et); err != nil {
		t.Fatal(err)
	}
	var d struct{ DeviceID, DeviceToken string }
	if err := json.Unmarshal(mustCall(t, 201, "POST", url+"/api/agent/enroll", "", fmt.Sprintf(`{"enrollmentToken":%q,"hostname":%q}`, et.Token, hostname)), &d); err != nil {
		t.Fatal(err)
	}
	return d.DeviceID, d.DeviceToken
}

func auditCount(t *testing.T, url, admin string) int {
	t.Helper()
	b := mustCall(t, 200, "GET", url+"/api/devices/security/bitlocker/keys/audit?format=ndjson", admin, "")
	return bytes.Count(b, []byte("\n"))
}

func TestTwoServersShareOneAuditChain(t *testing.T) {
	c := newCluster(t, pgDatabase(t), 2)
	a, b := c.servers[0].url, c.servers[1].url
	mustCall(t, 200, "PUT", a+"/api/settings", c.admin, `{"autoRotateOnDisclosure":false}`)
	type dev struct{ id, token string }
	devices := make([]dev, 6)
	for i := range devices {
		devices[i].id, devices[i].token = enrollAt(t, []string{a, b}[i%2], c.admin, fmt.Sprintf("LT-%02d", i))
	}
	before := auditCount(t, a, c.admin)

	// Escrows and views split across both servers, in parallel.
	var ops atomic.Int64
	acked := sync.Map{} // keyID -> password
	var wg sync.WaitGroup
	for i, d := range devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 15 {
				srv := []string{a, b}[(i+j)%2]
				pw, _ := recovery.GeneratePassword(rand.Reader)
				keyID := strings.ToUpper(uuid.NewString())
				status, body := call(t, "PUT", srv+"/api/agent/keys/"+keyID, d.token, escrowJSON(pw))
				if status != 201 {
					t.Errorf("escrow on %s: %d %s", srv, status, body)
					return
				}
				acked.Store(keyID, pw)
				ops.Add(1)
				other := []string{b, a}[(i+j)%2]
				status, body = call(t, "GET", other+"/api/devices/security/bitlocker/keys/"+d.id+"?reason=load", c.admin, "")
				if status != 200 {
					t.Errorf("view on %s: %d %s", other, status, body)
					return
				}
				var v struct{ Keys []any }
				json.Unmarshal(body, &v)
				ops.Add(int64(len(v.Keys))) // one key.read per key disclosed
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	// Every acknowledged escrow is there, whichever server took it.
	acked.Range(func(k, v any) bool {
		var list struct{ Items []struct{ KeyID string } }
		json.Unmarshal(mustCall(t, 200, "GET", a+"/api/devices/security/bitlocker/keys?keyId="+k.(string), c.admin, ""), &list)
		if len(list.Items) != 1 {
			t.Errorf("acknowledged key %s not found", k)
		}
		return true
	})
	// Count before the key lookups above added their key.list events: read the log through b,
	// subtracting what the lookups wrote.
	lookups := 0
	acked.Range(func(any, any) bool { lookups++; return true })
	if got, want := auditCount(t, b, c.admin), before+int(ops.Load())+lookups; got != want {
		t.Errorf("%d audit events, want %d (%d before, %d operations, %d lookups)", got, want, before, ops.Load(), lookups)
	}
	var out, errOut bytes.Buffer
	if code := Run(t.Context(), []string{"audit", "verify", "--database-url", c.url, "--master-key-file", c.keyFile}, nil, &out, &errOut, os.Getenv); code != 0 {
		t.Fatalf("audit verify: %d %s", code, errOut.String())
	}
}

func TestTwoServersPurgeOnce(t *testing.T) {
	c := newCluster(t, pgDatabase(t), 2, "--jobs-interval", "100ms")
	a := c.servers[0].url
	mustCall(t, 200, "PUT", a+"/api/settings", c.admin, `{"retentionPeriod":"1s"}`)
	id, token := enrollAt(t, a, c.admin, "LT-PURGE")
	samples := bitlockertest.Samples(t)[:6]
	for _, s := range samples {
		mustCall(t, 201, "PUT", a+"/api/agent/keys/"+s.KeyID, token, escrowJSON(s.Password))
	}
	// The protectors are gone from the unlocked volume, which lists only its TPM protector: every
	// key becomes superseded, retained for 1s.
	mustCall(t, 200, "POST", a+"/api/agent/report", token,
		`{"volumes":[{"volumeId":"\\\\?\\Volume{6a3c}\\","mountPoint":"C:","volumeType":"operatingSystem","protectionStatus":"on","encryptionStatus":"fullyEncrypted","lockStatus":"unlocked","keyProtectors":[{"keyId":"53465F4B-98AB-45E2-823D-1F93C0911081","type":"tpm"}]}]}`)
	deadline := time.Now().Add(20 * time.Second)
	for {
		var list struct{ Items []struct{ Status string } }
		json.Unmarshal(mustCall(t, 200, "GET", a+"/api/devices/security/bitlocker/keys?status=purged&deviceId="+id, c.admin, ""), &list)
		if len(list.Items) == len(samples) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d keys purged after 20s", len(list.Items), len(samples))
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // several more job runs on both servers
	var purges []struct{ KeyID string }
	b := mustCall(t, 200, "GET", a+"/api/devices/security/bitlocker/keys/audit?action=key.purge&limit=1000", c.admin, "")
	var page struct {
		Items []struct{ KeyID string }
	}
	json.Unmarshal(b, &page)
	purges = page.Items
	per := map[string]int{}
	for _, p := range purges {
		per[p.KeyID]++
	}
	for _, s := range samples {
		if per[s.KeyID] != 1 {
			t.Errorf("key %s has %d key.purge events, want exactly 1", s.KeyID, per[s.KeyID])
		}
	}
}

// pgProxy stands between Keyward and PostgreSQL so a test can take the database away and give
// it back, as an outage or a failover does, without stopping the server other tests share.
type pgProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  []net.Conn
}

func newPGProxy(t *testing.T, target string) *pgProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pgProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.setDown(true) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.down {
				p.mu.Unlock()
				c.Close()
				continue
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	return p
}

func (p *pgProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

func TestPostgresOutage(t *testing.T) {
	dbURL := pgDatabase(t)
	host := strings.TrimPrefix(dbURL, "postgres://")
	host = host[:strings.IndexAny(host, "/?")]
	proxy := newPGProxy(t, host)
	viaProxy := strings.Replace(dbURL, host, proxy.ln.Addr().String(), 1)
	c := newCluster(t, viaProxy, 1)
	srv := c.servers[0].url
	_, token := enrollAt(t, srv, c.admin, "LT-OUTAGE")

	var acked []string
	var mu sync.Mutex
	escrow := func() int {
		pw, _ := recovery.GeneratePassword(rand.Reader)
		keyID := strings.ToUpper(uuid.NewString())
		status, _ := call(t, "PUT", srv+"/api/agent/keys/"+keyID, token, escrowJSON(pw))
		if status == 201 {
			mu.Lock()
			acked = append(acked, keyID)
			mu.Unlock()
		}
		return status
	}
	for range 5 {
		if s := escrow(); s != 201 {
			t.Fatalf("escrow before the outage: %d", s)
		}
	}
	proxy.setDown(true)
	for i := range 10 {
		if s := escrow(); s != http.StatusServiceUnavailable {
			t.Fatalf("escrow %d during the outage answered %d, want 503", i, s)
		}
	}
	if s, _ := call(t, "GET", srv+"/readyz", "", ""); s != 503 {
		t.Fatalf("/readyz during the outage: %d, want 503", s)
	}
	if s, _ := call(t, "GET", srv+"/healthz", "", ""); s != 200 {
		t.Fatalf("/healthz during the outage: %d, want 200 (the process is alive)", s)
	}
	proxy.setDown(false)
	deadline := time.Now().Add(15 * time.Second)
	for escrow() != 201 {
		if time.Now().After(deadline) {
			t.Fatal("service did not resume within 15s of the database returning")
		}
		time.Sleep(100 * time.Millisecond)
	}
	mustCall(t, 200, "GET", srv+"/readyz", "", "")
	// Nothing acknowledged was lost; nothing refused was stored.
	var list struct{ Items []struct{ KeyID string } }
	json.Unmarshal(mustCall(t, 200, "GET", srv+"/api/devices/security/bitlocker/keys?limit=1000", c.admin, ""), &list)
	got := map[string]bool{}
	for _, k := range list.Items {
		got[k.KeyID] = true
	}
	for _, k := range acked {
		if !got[k] {
			t.Errorf("acknowledged key %s lost", k)
		}
	}
	if len(got) != len(acked) {
		t.Errorf("%d keys stored, %d acknowledged", len(got), len(acked))
	}
}

func TestMigrateStoreToPostgres(t *testing.T) {
	dbURL := pgDatabase(t)
	dir := t.TempDir()
	r := start(t, dir, nil)
	admin, deviceID, deviceToken, _ := setUp(t, r.URL(), dir)
	samples := bitlockertest.Samples(t)[:4]
	for _, s := range samples {
		mustCall(t, 201, "PUT", r.URL()+"/api/agent/keys/"+s.KeyID, deviceToken, escrowJSON(s.Password))
	}
	mustCall(t, 200, "GET", r.URL()+"/api/devices/security/bitlocker/keys/"+deviceID+"?reason=before+move", admin, "")
	r.stop()

	var out, errOut bytes.Buffer
	if code := Run(t.Context(), []string{"migrate-store", "--from", dir, "--to", dbURL}, nil, &out, &errOut, func(string) string { return "" }); code != 0 {
		t.Fatalf("migrate-store: %d %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "verified") {
		t.Fatalf("migrate-store said %q", out.String())
	}
	// A second copy into the now non-empty database is refused and changes nothing.
	if code := Run(t.Context(), []string{"migrate-store", "--from", dir, "--to", dbURL}, nil, io.Discard, &errOut, func(string) string { return "" }); code == 0 {
		t.Fatal("a copy into a non-empty database was accepted")
	}

	p := serveProcess(t, "--database-url", dbURL, "--master-key-file", filepath.Join(dir, "master.key"), "--data-dir", t.TempDir())
	var v struct {
		Keys []struct{ KeyID, RecoveryPassword string }
	}
	json.Unmarshal(mustCall(t, 200, "GET", p.url+"/api/devices/security/bitlocker/keys/"+deviceID+"?reason=after+move", admin, ""), &v)
	got := map[string]string{}
	for _, k := range v.Keys {
		got[k.KeyID] = k.RecoveryPassword
	}
	for _, s := range samples {
		if got[s.KeyID] != s.Password {
			t.Errorf("key %s after the move: material present %v, not the escrowed one", s.KeyID, got[s.KeyID] != "")
		}
	}
	// New keys get IDs after the copied ones.
	pw, _ := recovery.GeneratePassword(rand.Reader)
	mustCall(t, 201, "PUT", p.url+"/api/agent/keys/"+strings.ToUpper(uuid.NewString()), deviceToken, escrowJSON(pw))
	if code := Run(t.Context(), []string{"audit", "verify", "--database-url", dbURL, "--master-key-file", filepath.Join(dir, "master.key")}, nil, &out, &errOut, func(string) string { return "" }); code != 0 {
		t.Fatalf("audit verify after the move: %d %s", code, errOut.String())
	}
}
