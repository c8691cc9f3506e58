package main

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
)

// TestNginxInFront runs the documented nginx configuration (packaging/nginx/keyward.conf, with
// its names, ports and paths swapped for the test's) in front of a Keyward server started with
// the documented settings: TLS ends at nginx, HSTS is sent, plain HTTP is redirected, and the
// audit trail records the person's address, never one a client made up. Needs nginx
// (apt-get install nginx-light); skips without it unless KEYWARD_TEST_REQUIRE_NGINX=1 (CI).
func TestNginxInFront(t *testing.T) {
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		if os.Getenv("KEYWARD_TEST_REQUIRE_NGINX") == "1" {
			t.Fatal("nginx not found and KEYWARD_TEST_REQUIRE_NGINX=1")
		}
		t.Skip("nginx not found (apt-get install nginx-light)")
	}
	dir := t.TempDir()
	httpsPort, httpPort := freePort(t), freePort(t)
	public := fmt.Sprintf("https://127.0.0.1:%d", httpsPort)
	r := start(t, dir, map[string]string{"KEYWARD_PUBLIC_URL": public, "KEYWARD_TRUSTED_PROXIES": "127.0.0.1"})
	admin, _, _, _ := setUp(t, r.URL(), dir)

	// The documented file, changed only where a test must.
	tmp := t.TempDir()
	ca := testkit.NewCA(t)
	_, cert, key := ca.Write(t, tmp)
	pool := ca.Pool
	doc, err := os.ReadFile("../../packaging/nginx/keyward.conf")
	if err != nil {
		t.Fatal(err)
	}
	conf := string(doc)
	for _, swap := range [][2]string{
		{"listen 443 ssl http2;", fmt.Sprintf("listen 127.0.0.1:%d ssl http2;", httpsPort)},
		{"listen 80;", fmt.Sprintf("listen 127.0.0.1:%d;", httpPort)},
		{"/etc/keyward/tls/fullchain.pem", cert},
		{"/etc/keyward/tls/privkey.pem", key},
		{"http://127.0.0.1:8080", r.URL()},
	} {
		if strings.Count(conf, swap[0]) != 1 {
			t.Fatalf("packaging/nginx/keyward.conf no longer has %q once: update this test with it", swap[0])
		}
		conf = strings.Replace(conf, swap[0], swap[1], 1)
	}
	conf = strings.ReplaceAll(conf, "server_name keyward.example.com;", "server_name 127.0.0.1;")
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	main := fmt.Sprintf(`%s
daemon off;
pid %[2]s/nginx.pid;
error_log stderr warn;
events {}
http {
    access_log off;
    client_body_temp_path %[2]s/body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    include %[2]s/keyward.conf;
}
`, user, tmp)
	for name, body := range map[string]string{"keyward.conf": conf, "nginx.conf": main} {
		if err := os.WriteFile(filepath.Join(tmp, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(nginx, "-p", tmp, "-c", filepath.Join(tmp, "nginx.conf"))
	var nginxLog strings.Builder
	cmd.Stderr = &nginxLog
	cmd.WaitDelay = 5 * time.Second // its workers hold standard error open
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// SIGTERM: the master stops its workers, then itself.
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })

	// A client at 127.0.0.2: nginx sees that address and appends it; Keyward trusts 127.0.0.1.
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	client := &http.Client{
		Transport:     &http.Transport{DialContext: dialer.DialContext, TLSClientConfig: &tls.Config{RootCAs: pool}},
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	var res *http.Response
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if res, err = client.Get(public + "/healthz"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx did not answer: %v\n%s", err, nginxLog.String())
		}
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("GET /healthz through nginx: %d", res.StatusCode)
	}
	res, err = client.Get(public + "/signin")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(res.Header.Get("Strict-Transport-Security"), "max-age=") {
		t.Errorf("GET /signin through nginx: %d, HSTS %q", res.StatusCode, res.Header.Get("Strict-Transport-Security"))
	}
	res, err = client.Get(fmt.Sprintf("http://127.0.0.1:%d/signin", httpPort))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusPermanentRedirect || !strings.HasPrefix(res.Header.Get("Location"), "https://") {
		t.Errorf("plain HTTP: %d to %q, want a redirect to https", res.StatusCode, res.Header.Get("Location"))
	}

	// A refused API call with a made-up X-Forwarded-For: the trail names 127.0.0.2.
	req, _ := http.NewRequest("GET", public+"/api/devices", nil)
	req.Header.Set("Authorization", "Bearer kwt_0000000000000000_not-a-token")
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	if res, err = client.Do(req); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 401 {
		t.Fatalf("a bad token through nginx: %d", res.StatusCode)
	}
	var events struct {
		Items []struct{ Action, Outcome, IP string }
	}
	if err := json.Unmarshal(mustCall(t, 200, "GET", r.URL()+"/api/devices/security/bitlocker/keys/audit?action=auth.token&outcome=denied", admin, ""), &events); err != nil {
		t.Fatal(err)
	}
	if len(events.Items) != 1 || events.Items[0].IP != "127.0.0.2" {
		t.Fatalf("the refusal through nginx was recorded as %+v, want one event from 127.0.0.2", events.Items)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
