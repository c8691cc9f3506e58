package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/keyward/keyward/internal/bitlockertest"
)

// graphKey is a recovery key as Microsoft Graph holds it.
type graphKey struct {
	ID, DeviceID, VolumeType, Key, Created string
}

// graphServer answers as Microsoft Graph's documentation shows: a client-credentials token from
// the tenant's /oauth2/v2.0/token, recoveryKeys in pages linked by @odata.nextLink, the key only
// with $select=key, devices by $filter=deviceId eq '…', a 400 without a User-Agent, and
// throttling (429 and 503 with Retry-After) on the first attempt of some calls.
type graphServer struct {
	*httptest.Server
	t       *testing.T
	keys    []graphKey
	devices map[string]string // deviceId → displayName
	mu      sync.Mutex
	seen    map[string]int // calls per path and query
	agents  map[string]bool
}

const graphToken = "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.graph"

func newGraphServer(t *testing.T, keys []graphKey, devices map[string]string) *graphServer {
	g := &graphServer{t: t, keys: keys, devices: devices, seen: map[string]int{}, agents: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /contoso.onmicrosoft.com/oauth2/v2.0/token", func(w http.ResponseWriter, r *http.Request) {
		if r.PostFormValue("grant_type") != "client_credentials" || r.PostFormValue("client_id") != "app-1" ||
			r.PostFormValue("client_secret") != "s3cret" || !strings.HasSuffix(r.PostFormValue("scope"), "/.default") {
			w.WriteHeader(401)
			fmt.Fprint(w, `{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}`)
			return
		}
		fmt.Fprintf(w, `{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":%q}`, graphToken)
	})
	mux.HandleFunc("GET /v1.0/informationProtection/bitlocker/recoveryKeys", func(w http.ResponseWriter, r *http.Request) {
		if !g.allowed(w, r) {
			return
		}
		from := 0
		if s := r.URL.Query().Get("$skiptoken"); s != "" {
			fmt.Sscan(s, &from)
		}
		page := map[string]any{"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#informationProtection/bitlocker/recoveryKeys"}
		var items []map[string]string
		for _, k := range g.keys[from:min(from+2, len(g.keys))] {
			items = append(items, map[string]string{"id": k.ID, "createdDateTime": k.Created, "deviceId": k.DeviceID, "volumeType": k.VolumeType})
		}
		page["value"] = items
		if from+2 < len(g.keys) {
			page["@odata.nextLink"] = fmt.Sprintf("%s/v1.0/informationProtection/bitlocker/recoveryKeys?$skiptoken=%d", g.URL, from+2)
		}
		json.NewEncoder(w).Encode(page)
	})
	mux.HandleFunc("GET /v1.0/informationProtection/bitlocker/recoveryKeys/{id}", func(w http.ResponseWriter, r *http.Request) {
		if !g.allowed(w, r) {
			return
		}
		for _, k := range g.keys {
			if k.ID == r.PathValue("id") {
				v := map[string]string{"id": k.ID, "createdDateTime": k.Created, "deviceId": k.DeviceID, "volumeType": k.VolumeType}
				if r.URL.Query().Get("$select") == "key" {
					v["key"] = k.Key
				}
				json.NewEncoder(w).Encode(v)
				return
			}
		}
		w.WriteHeader(404)
		fmt.Fprint(w, `{"error":{"code":"NotFound","message":"not found"}}`)
	})
	mux.HandleFunc("GET /v1.0/devices", func(w http.ResponseWriter, r *http.Request) {
		if !g.allowed(w, r) {
			return
		}
		var id string
		if _, err := fmt.Sscanf(r.URL.Query().Get("$filter"), "deviceId eq %s", &id); err != nil {
			w.WriteHeader(400)
			fmt.Fprint(w, `{"error":{"code":"Request_UnsupportedQuery","message":"bad filter"}}`)
			return
		}
		id = strings.Trim(id, "'")
		items := []map[string]string{}
		if name, ok := g.devices[id]; ok {
			items = append(items, map[string]string{"displayName": name})
		}
		json.NewEncoder(w).Encode(map[string]any{"value": items})
	})
	g.Server = httptest.NewServer(mux)
	t.Cleanup(g.Close)
	return g
}

// allowed checks the token and the User-Agent, and throttles the first call of every second
// page of keys (429) and of every device lookup (503).
func (g *graphServer) allowed(w http.ResponseWriter, r *http.Request) bool {
	w.Header().Set("Content-Type", "application/json")
	if r.Header.Get("Authorization") != "Bearer "+graphToken {
		w.WriteHeader(401)
		fmt.Fprint(w, `{"error":{"code":"InvalidAuthenticationToken","message":"Access token is empty."}}`)
		return false
	}
	ua := r.Header.Get("User-Agent")
	if ua == "" || strings.HasPrefix(ua, "Go-http-client") {
		w.WriteHeader(400)
		fmt.Fprint(w, `{"error":{"code":"BadRequest","message":"User-Agent header is required."}}`)
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.agents[ua] = true
	call := r.URL.Path + "?" + r.URL.RawQuery
	g.seen[call]++
	switch {
	case g.seen[call] == 1 && strings.Contains(r.URL.RawQuery, "skiptoken=2"):
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(429)
		fmt.Fprint(w, `{"error":{"code":"TooManyRequests","message":"Too many requests."}}`)
		return false
	case g.seen[call] == 1 && r.URL.Path == "/v1.0/devices":
		w.Header().Set("Retry-After", "0")
		w.WriteHeader(503)
		fmt.Fprint(w, `{"error":{"code":"ServiceUnavailable","message":"busy"}}`)
		return false
	}
	return true
}

func TestImportEntra(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir, nil)
	admin, _, _, _ := setUp(t, r.URL(), dir)
	mustCall(t, 200, "PUT", r.URL()+"/api/settings", admin, `{"autoRotateOnDisclosure":false}`)
	s := bitlockertest.Samples(t)
	keys := []graphKey{
		{ID: strings.ToLower(s[0].KeyID), DeviceID: "1ab40ab2-32a8-4b00-b828-a0d4c4be6b41", VolumeType: "1", Key: s[0].Password, Created: "2024-07-19T04:09:00Z"},
		{ID: strings.ToLower(s[1].KeyID), DeviceID: "1ab40ab2-32a8-4b00-b828-a0d4c4be6b41", VolumeType: "2", Key: s[1].Password, Created: "2024-07-19T04:10:00Z"},
		{ID: strings.ToLower(s[2].KeyID), DeviceID: "5d7e8f90-1a2b-4c3d-9e8f-0a1b2c3d4e5f", VolumeType: "3", Key: s[2].Password, Created: "2025-01-02T03:04:05Z"},
		{ID: "9c0a1e2f-3b4c-4d5e-8f60-718293a4b5c6", DeviceID: "5d7e8f90-1a2b-4c3d-9e8f-0a1b2c3d4e5f", VolumeType: "1", Key: "111111-222222-333333-444444-555555-666666-777777-888888"},
		{ID: strings.ToLower(s[3].KeyID), DeviceID: "00000000-dead-4bee-8f00-000000000000", VolumeType: "1", Key: s[3].Password},
	}
	g := newGraphServer(t, keys, map[string]string{
		"1ab40ab2-32a8-4b00-b828-a0d4c4be6b41": "LT-0042", // the enrolled device
		"5d7e8f90-1a2b-4c3d-9e8f-0a1b2c3d4e5f": "DESKTOP-7Q2",
	})
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"import", "entra", "--tenant", "contoso.onmicrosoft.com", "--client-id", "app-1", "--client-secret-file", secret,
		"--graph-url", g.URL + "/v1.0", "--login-url", g.URL}

	code, out, stderr := cli(t, dir, "", args...)
	if code != 1 || !strings.Contains(out, "5 records: imported 3 keys (1 new device records), 0 already held, 0 conflicting, 2 invalid") {
		t.Fatalf("import entra: exit %d\n%s%s", code, out, stderr)
	}
	if !strings.Contains(out, "Entra key 4 (9c0a1e2f-3b4c-4d5e-8f60-718293a4b5c6): invalid DESKTOP-7Q2 key 9C0A1E2F-3B4C-4D5E-8F60-718293A4B5C6: recoveryPassword: block 7") ||
		!strings.Contains(out, "of device 00000000-dead-4bee-8f00-000000000000, not found in Entra: invalid") || strings.Contains(out+stderr, "111111") {
		t.Fatalf("the bad entries:\n%s", out)
	}
	if !g.agents["Keyward/"+version] {
		t.Errorf("user agents %v", g.agents)
	}
	for i, want := range map[int]string{0: "LT-0042", 1: "LT-0042", 2: "DESKTOP-7Q2"} {
		found := lookUp(t, r.URL(), admin, s[i].KeyID[:8])
		if len(found) != 1 || found[0].DeviceName != want {
			t.Fatalf("key %s: %+v", s[i].KeyID[:8], found)
		}
		if pw := viewKeys(t, r.URL(), admin, found[0].DeviceID)[s[i].KeyID]; pw != s[i].Password {
			t.Errorf("key %s: the password viewed is not the one in Entra", s[i].KeyID[:8])
		}
	}
	events := auditActions(t, r.URL(), admin, "key.import")
	if len(events) != 3 || !strings.Contains(events[0].Detail, "entra tenant contoso.onmicrosoft.com") {
		t.Fatalf("events %+v", events)
	}
	// Viewed like escrowed keys: one key.read per key disclosed (LT-0042's two keys twice).
	if n := len(auditActions(t, r.URL(), admin, "key.read")); n != 5 {
		t.Errorf("%d key.read events, want 5", n)
	}

	code, out, _ = cli(t, dir, "", args...)
	if code != 1 || !strings.Contains(out, "imported 0 keys (0 new device records), 3 already held") {
		t.Fatalf("second import: %d\n%s", code, out)
	}
	if n := len(auditActions(t, r.URL(), admin, "key.import")); n != 3 {
		t.Errorf("the second import recorded %d more key.import events", n-3)
	}

	// A wrong secret is named by the identity platform's code, and nothing is imported.
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(bad, []byte("wrong"), 0o600); err != nil {
		t.Fatal(err)
	}
	badArgs := append(append([]string{}, args[:7]...), bad, "--graph-url", g.URL+"/v1.0", "--login-url", g.URL)
	code, _, stderr = cli(t, dir, "", badArgs...)
	if code != 1 || !strings.Contains(stderr, "invalid_client") || strings.Contains(stderr, "wrong") {
		t.Fatalf("a wrong secret: %d %s", code, stderr)
	}
}
