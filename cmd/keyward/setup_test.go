package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/keyward/keyward/internal/web/browsertest"
)

// TestFirstStartInBrowser is day one as a new admin has it: `keyward serve` on an empty data
// directory prints a setup link; the sign-in page says where it is; the link's page, driven in
// Chromium, creates the first admin and lands on the device list. The link then works no more,
// and its token was never stored or printed anywhere else.
func TestFirstStartInBrowser(t *testing.T) {
	b := browsertest.Start(t)
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(testBinary(t), "serve", "--data-dir", dir, "--listen", addr)
	cmd.Env = []string{}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var logMu sync.Mutex
	var logs bytes.Buffer
	links := make(chan string, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logMu.Lock()
			logs.Write(append(sc.Bytes(), '\n'))
			logMu.Unlock()
			var rec struct{ SetupLink string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.SetupLink != "" {
				links <- rec.SetupLink
			}
		}
	}()
	t.Cleanup(func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() })
	base := "http://" + addr
	waitHealthy(t, base)
	var link string
	select {
	case link = <-links:
	case <-time.After(20 * time.Second):
		t.Fatal("serve printed no setup link")
	}
	u, err := url.Parse(link)
	if err != nil || u.Scheme+"://"+u.Host != base || u.Path != "/setup" || len(u.Query().Get("token")) != 43 {
		t.Fatalf("setup link %q: want %s/setup?token= and 256 bits of base64url", link, base)
	}
	token := u.Query().Get("token")

	ctx := b.Tab(t)
	do := func(actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatal(err)
		}
	}
	text := func(expr string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		return v
	}
	view := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.WaitReady(chromedp.CSS(`body[data-view="` + name + `"]`))
	}
	do(chromedp.Navigate(base+"/"), view("signin"))
	help := text(`document.querySelector("#setup-help").innerText`)
	if !strings.Contains(help, "setup link") || !strings.Contains(help, "keyward setup-link") {
		t.Errorf("the sign-in page does not say where the setup link is: %q", help)
	}
	do(chromedp.Navigate(link), view("setup"),
		chromedp.SetValue(chromedp.CSS("#email"), "First.Admin@example.com"),
		chromedp.SetValue(chromedp.CSS("#password"), "a long sign-in password"),
		chromedp.SetValue(chromedp.CSS("#password2"), "a long sign-in password"),
		chromedp.Click(chromedp.CSS(`form[action="/setup"] button[type="submit"]`)),
		view("devices"))
	location, heading := text(`location.pathname`), text(`document.querySelector("h1").innerText`)
	if !strings.HasSuffix(location, "/devices") || heading == "" {
		t.Fatalf("after setup the browser is at %s (heading %q), want the device list", location, heading)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(screenshotsDir(t), "first-start-devices.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
	// Single use: the same link, in another browser, says it does not work and what to do.
	other := b.Tab(t)
	ctx = other
	do(chromedp.Navigate(link), view("setup"))
	refusal := text(`document.querySelector(".error-box").innerText`)
	if !strings.Contains(refusal, "keyward setup-link") {
		t.Errorf("a used setup link says %q", refusal)
	}
	// The sign-in page no longer mentions setup.
	do(chromedp.Navigate(base+"/signin"), view("signin"))
	if text(`String(document.querySelectorAll("#setup-help").length)`) != "0" {
		t.Error("the sign-in page still offers setup once an admin exists")
	}

	// The command line: no new link once there is an admin; the trail has both events.
	code, _, errOut := run(t, "setup-link", "--data-dir", dir)
	if code != 1 || !strings.Contains(errOut, "already has an admin") {
		t.Errorf("setup-link with an admin: exit %d, %q", code, errOut)
	}
	code, out, errOut := run(t, "audit", "export", "--data-dir", dir, "--format", "ndjson")
	if code != 0 {
		t.Fatalf("audit export: %d %s", code, errOut)
	}
	actions := map[string]string{}
	for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		var ev struct{ Action, Outcome, Detail string }
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatal(err)
		}
		actions[ev.Action] = ev.Detail
	}
	if _, ok := actions["setup.link"]; !ok || !strings.Contains(actions["setup.admin"], "first.admin@example.com") {
		t.Errorf("audit trail after setup: %v", actions)
	}

	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
	<-done
	// The token appears in exactly one line the server printed, and nowhere on disk.
	logMu.Lock()
	if n := strings.Count(logs.String(), token); n != 1 {
		t.Errorf("the setup token appears %d times in the server's output, want once", n)
	}
	logMu.Unlock()
	for _, name := range []string{"keyward.db", "keyward.db-wal"} {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil && bytes.Contains(b, []byte(token)) {
			t.Errorf("the setup token is stored in %s", name)
		}
	}
}

// TestSetupLinkCommand: setup-link prints a working link while there is no admin; a link's
// page refuses a password that is too short and keeps the link usable.
func TestSetupLinkCommand(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir, nil)
	code, out, errOut := run(t, "setup-link", "--data-dir", dir, "--public-url", r.URL())
	link := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(link, r.URL()+"/setup?token=") {
		t.Fatalf("setup-link: exit %d, %q %q", code, out, errOut)
	}
	status, body := call(t, "GET", link, "", "")
	if status != 200 || !strings.Contains(string(body), `name="token"`) {
		t.Fatalf("GET %s: %d", link, status)
	}
	status, body = call(t, "GET", r.URL()+"/setup?token=not-a-token", "", "")
	if status != 404 || !strings.Contains(string(body), "keyward setup-link") {
		t.Errorf("a wrong token: %d", status)
	}
}

// screenshotsDir is where screenshots go: KEYWARD_SCREENSHOTS_DIR, or screenshots/ at the root
// of the repository (git-ignored).
func screenshotsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("KEYWARD_SCREENSHOTS_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
