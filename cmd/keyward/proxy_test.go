package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestParseTrustedProxies(t *testing.T) {
	got, err := parseTrustedProxies(" 10.0.0.0/8, 192.168.1.7,::1 ,fd00::/8")
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, p := range got {
		s = append(s, p.String())
	}
	if strings.Join(s, " ") != "10.0.0.0/8 192.168.1.7/32 ::1/128 fd00::/8" {
		t.Fatalf("parsed %v", s)
	}
	for _, bad := range []string{"10.0.0.0/33", "proxy.example.com", "10.0.0"} {
		if _, err := parseTrustedProxies(bad); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("%q: error %v does not name it", bad, err)
		}
	}
}

func TestClientAddress(t *testing.T) {
	proxies, err := parseTrustedProxies("10.0.0.0/8,::1")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"direct client, header ignored", "203.0.113.9:5000", []string{"198.51.100.1"}, "203.0.113.9:5000"},
		{"through a proxy", "10.0.0.2:4000", []string{"198.51.100.1"}, "198.51.100.1:0"},
		{"spoofed entry left of the real client", "10.0.0.2:4000", []string{"1.1.1.1, 198.51.100.1"}, "198.51.100.1:0"},
		{"two proxies", "10.0.0.2:4000", []string{"198.51.100.1, 10.0.0.3"}, "198.51.100.1:0"},
		{"header repeated", "10.0.0.2:4000", []string{"1.1.1.1", "198.51.100.1"}, "198.51.100.1:0"},
		{"IPv6 proxy and client", "[::1]:4000", []string{"2001:db8::7"}, "[2001:db8::7]:0"},
		{"no header", "10.0.0.2:4000", nil, "10.0.0.2:4000"},
		{"unreadable hop", "10.0.0.2:4000", []string{"198.51.100.1, garbage"}, "10.0.0.2:4000"},
		{"only proxies", "10.0.0.2:4000", []string{"10.0.0.5"}, "10.0.0.5:0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got string
			h := clientAddress(proxies, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.RemoteAddr }))
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = c.peer
			for _, v := range c.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			h.ServeHTTP(httptest.NewRecorder(), r)
			if got != c.want {
				t.Fatalf("RemoteAddr %q, want %q", got, c.want)
			}
		})
	}
}

// Behind a trusted proxy the audit trail records the client's address; a client talking
// directly cannot put another address there.
func TestAuditRecordsClientBehindProxy(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir, map[string]string{"KEYWARD_TRUSTED_PROXIES": "127.0.0.1"})
	admin, _, _, _ := setUp(t, r.URL(), dir)
	req, err := http.NewRequest("GET", r.URL()+"/api/devices", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+admin+"x")
	req.Header.Set("X-Forwarded-For", "198.51.100.23")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Fatalf("status %d, want 401", res.StatusCode)
	}
	b := mustCall(t, 200, "GET", r.URL()+"/api/devices/security/bitlocker/keys/audit?action=auth.token", admin, "")
	if !strings.Contains(string(b), `"ip":"198.51.100.23"`) {
		t.Fatalf("the denied attempt does not carry the forwarded client address: %s", b)
	}

	// Without the setting, the header is not believed.
	dir2 := t.TempDir()
	r2 := start(t, dir2, nil)
	admin2, _, _, _ := setUp(t, r2.URL(), dir2)
	req.URL.Host = strings.TrimPrefix(r2.URL(), "http://")
	if res, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	b = mustCall(t, 200, "GET", r2.URL()+"/api/devices/security/bitlocker/keys/audit?action=auth.token", admin2, "")
	if strings.Contains(string(b), "198.51.100.23") || !strings.Contains(string(b), `"ip":"127.0.0.1"`) {
		t.Fatalf("a client's own X-Forwarded-For was believed: %s", b)
	}
}
