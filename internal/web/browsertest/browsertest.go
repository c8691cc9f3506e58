// Package browsertest starts a real headless Chromium for the portal's acceptance tests, and
// gives each test a tab in a browser context of its own (its own cookies and permissions), so
// tests that sign in as different people share one browser without sharing a session.
//
// Tests skip when no Chromium is installed, unless KEYWARD_TEST_REQUIRE_CHROMIUM=1 (CI sets
// it), and then they fail: a missing browser must not turn the acceptance tests green. Tests
// only.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
)

// Browser is one running Chromium.
type Browser struct {
	ctx context.Context // the browser's first context; its tab is never used by tests
}

// Path returns the Chromium to run: KEYWARD_CHROMIUM, else the first of the usual names on
// PATH, else "".
func Path() string {
	if p := os.Getenv("KEYWARD_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// Start starts Chromium for the test, or skips the test when there is none (fails it when
// KEYWARD_TEST_REQUIRE_CHROMIUM=1). The browser stops when the test ends.
func Start(t *testing.T) *Browser {
	t.Helper()
	path := Path()
	if path == "" {
		if os.Getenv("KEYWARD_TEST_REQUIRE_CHROMIUM") == "1" {
			t.Fatal("no Chromium found (install chromium or set KEYWARD_CHROMIUM) and KEYWARD_TEST_REQUIRE_CHROMIUM=1")
		}
		t.Skip("no Chromium found; set KEYWARD_CHROMIUM or install chromium to run the browser tests")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("disable-features", "Translate,OptimizationHints,MediaRouter,AutofillServerCommunication,CertificateTransparencyComponentUpdater"),
		chromedp.Flag("password-store", "basic"),
		chromedp.WindowSize(1280, 900),
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first run starts the browser and ties its life to ctx, so it runs without a timeout.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium %s: %v", path, err)
	}
	return &Browser{ctx: ctx}
}

// Tab opens a tab in a new browser context (no cookies, no permissions), closed when the test
// ends. Each action on it should run under a timeout derived from the returned context.
func (b *Browser) Tab(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("open a tab: %v", err)
	}
	return ctx
}

// GrantClipboard lets pages of origin (scheme://host:port) in the tab's browser context read
// and write the clipboard without asking.
func GrantClipboard(ctx context.Context, origin string) error {
	c := chromedp.FromContext(ctx)
	for _, name := range []string{"clipboard-read", "clipboard-write"} {
		_, err := chromedp.CallBrowser(ctx, browser.SetPermission, browser.SetPermissionParams{
			Permission:       &browser.PermissionDescriptor{Name: name, AllowWithoutSanitization: true},
			Setting:          browser.PermissionSettingGranted,
			Origin:           origin,
			BrowserContextID: c.BrowserContextID,
		})
		if err != nil {
			return err
		}
	}
	return nil
}
