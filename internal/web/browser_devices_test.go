package web_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/keyward/keyward/internal/bitlockertest"
	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/web/browsertest"
)

// TestBrowserLookAlikeDevice is the planted look-alike in a real Chromium: a second device
// claims alice as its owner and escrows junk under her real key ID. Self-service tells the two
// apart, both Security pages name the other holder, the admin marks the look-alike disputed
// and gives the real laptop its tag, after which alice gets her key at once and a helpdesk
// scoped to the tag sees the laptop. A data drive reported locked keeps its key, shown Locked.
func TestBrowserLookAlikeDevice(t *testing.T) {
	b := browsertest.Start(t)
	e := newEnv(t)
	e.person(escrow.RoleAdmin, "admin@example.com")
	e.person(escrow.RoleHelpdesk, "lab@example.com", "lab")
	e.person(escrow.RoleUser, "alice@example.com")
	ks := samples(t, 3)
	real := e.enroll("LT-0042", "alice@example.com", ks[0])
	e.clock.Advance(48 * time.Hour)
	planted := e.enroll("LT-ALICE", "alice@example.com", bitlockertest.Sample{KeyID: ks[0].KeyID, Password: ks[1].Password})

	// The real laptop's data drive: escrowed, then reported locked with no protectors.
	dataID, dataMount, dataKind := volumeOf(1)
	e.agent(http.MethodPut, "/api/agent/keys/"+ks[2].KeyID, real.Token, map[string]any{"volumeId": dataID, "mountPoint": dataMount,
		"volumeType": dataKind, "kind": "recoveryPassword", "recoveryPassword": ks[2].Password}, http.StatusCreated, nil)
	osID, osMount, osKind := volumeOf(0)
	m := hmac.New(sha256.New, real.VerificationKey)
	m.Write([]byte(ks[0].Password))
	e.agent(http.MethodPost, "/api/agent/report", real.Token, map[string]any{"volumes": []map[string]any{
		{"volumeId": osID, "mountPoint": osMount, "volumeType": osKind, "protectionStatus": "on", "encryptionStatus": "fullyEncrypted",
			"lockStatus": "unlocked", "keyProtectors": []map[string]any{{"keyId": ks[0].KeyID, "type": "recoveryPassword", "fingerprint": hex.EncodeToString(m.Sum(nil))}}},
		{"volumeId": dataID, "mountPoint": dataMount, "volumeType": dataKind, "protectionStatus": "on", "encryptionStatus": "fullyEncrypted",
			"lockStatus": "locked", "keyProtectors": []map[string]any{}},
	}}, http.StatusOK, nil)
	base := e.srv.URL

	lookup := func(t *testing.T, ctx context.Context, keyID string) {
		t.Helper()
		browserRun(t, ctx,
			chromedp.Navigate(base+"/my"), waitView("self"),
			chromedp.SetValue(chromedp.CSS("#keyId"), keyID),
			chromedp.SetValue(chromedp.CSS("#reason"), "forgotten-pin"),
			chromedp.Click(chromedp.CSS(`form[action="/my/key"] button[type="submit"]`)),
			chromedp.WaitReady(chromedp.CSS(`body[data-view="self_key"], body[data-view="error"]`)),
		)
	}
	text := func(t *testing.T, ctx context.Context) string {
		t.Helper()
		return evaluate[string](t, ctx, `document.querySelector("main").innerText`)
	}

	aliceTab := b.Tab(t)
	signIn(t, aliceTab, base, "alice@example.com", "self")
	t.Run("self-service tells the two devices apart", func(t *testing.T) {
		lookup(t, aliceTab, ks[0].KeyID[:8])
		checkPage(t, aliceTab)
		if h := evaluate[string](t, aliceTab, `document.querySelector("main h1").textContent`); h != "Which key?" {
			t.Fatalf("alice's lookup answered %q", h)
		}
		items := evaluate[[]string](t, aliceTab, `Array.from(document.querySelectorAll("ul.candidates li")).map(li => li.innerText)`)
		if len(items) != 2 || items[0] == items[1] {
			t.Fatalf("candidates %q: want two lines that differ", items)
		}
		for i, want := range []string{"serial SN-LT-0042", "serial SN-LT-ALICE"} {
			if !strings.Contains(items[i], want) || !strings.Contains(items[i], "enrolled ") || !strings.Contains(items[i], "last seen ") ||
				!strings.Contains(items[i], "key escrowed ") {
				t.Errorf("candidate %q lacks %s, enrolled, last seen or key escrowed", items[i], want)
			}
		}
	})

	adminTab := b.Tab(t)
	signIn(t, adminTab, base, "admin@example.com", "devices")
	t.Run("the admin sees both holders and marks the look-alike disputed", func(t *testing.T) {
		browserRun(t, adminTab, chromedp.Navigate(base+"/devices?q="+ks[0].KeyID[:8]), waitView("devices"))
		checkPage(t, adminTab)
		rows := evaluate[[]string](t, adminTab, `Array.from(document.querySelectorAll("main table tbody tr")).map(r => r.innerText)`)
		if len(rows) != 2 || !strings.Contains(rows[0], "SN-LT-0042") || !strings.Contains(rows[1], "SN-LT-ALICE") ||
			!strings.Contains(rows[0], "key "+ks[0].KeyID+" escrowed") || !strings.Contains(rows[1], "key "+ks[0].KeyID+" escrowed") {
			t.Fatalf("search by key ID rows: %q", rows)
		}
		for _, d := range []struct{ dev, other device }{{real, planted}, {planted, real}} {
			browserRun(t, adminTab, chromedp.Navigate(base+"/devices/"+d.dev.ID+"/security"), waitView("device_security"))
			checkPage(t, adminTab)
			shared := evaluate[string](t, adminTab, `Array.from(document.querySelectorAll(".shared-key")).map(s => s.innerText).join("|")`)
			if !strings.Contains(shared, "Key ID also on") || !strings.Contains(shared, d.other.Name) {
				t.Errorf("Security page of %s: shared key note %q, want %s named", d.dev.Name, shared, d.other.Name)
			}
			if n := evaluate[int](t, adminTab, `document.querySelectorAll('.shared-key a[href="/devices/`+d.other.ID+`/security"]').length`); n != 1 {
				t.Errorf("Security page of %s links %d times to %s", d.dev.Name, n, d.other.Name)
			}
		}

		browserRun(t, adminTab, chromedp.Navigate(base+"/devices/"+planted.ID), waitView("device_overview"))
		checkPage(t, adminTab)
		browserRun(t, adminTab,
			chromedp.Click(chromedp.CSS(`form[action$="/dispute"] button[type="submit"]`)),
			chromedp.WaitVisible(chromedp.CSS(".error-box")),
		)
		if msg := evaluate[string](t, adminTab, `document.querySelector(".error-box").textContent`); msg != "Say why the device is disputed." {
			t.Errorf("dispute without a reason: %q", msg)
		}
		browserRun(t, adminTab,
			chromedp.SetValue(chromedp.CSS("#dispute-reason"), "not a company laptop"),
			chromedp.Click(chromedp.CSS(`form[action$="/dispute"] button[type="submit"]`)),
			chromedp.WaitVisible(chromedp.CSS(".badge.disputed")),
		)
		if got := text(t, adminTab); !strings.Contains(got, "Device marked disputed") || !strings.Contains(got, "not a company laptop") {
			t.Errorf("after marking disputed the page says:\n%s", got)
		}
		ev := e.events(escrow.AuditFilter{Action: escrow.ActionDeviceDispute})
		if len(ev) != 1 || ev[0].DeviceID != planted.ID || ev[0].Reason != "not a company laptop" || ev[0].Source != escrow.SourceAdminPortal {
			t.Fatalf("device.dispute events %+v", ev)
		}
	})

	t.Run("the admin sets the laptop's owner and tags", func(t *testing.T) {
		browserRun(t, adminTab, chromedp.Navigate(base+"/devices/"+real.ID), waitView("device_overview"))
		browserRun(t, adminTab,
			chromedp.SetValue(chromedp.CSS("#tags"), "Lab"),
			chromedp.Click(chromedp.CSS(`form[action$="/update"] button[type="submit"]`)),
			chromedp.WaitVisible(chromedp.CSS(".error-box")),
		)
		if msg := evaluate[string](t, adminTab, `document.querySelector(".error-box").textContent`); !strings.HasPrefix(msg, "tags[0]:") {
			t.Errorf("an upper-case tag answered %q", msg)
		}
		browserRun(t, adminTab,
			chromedp.SetValue(chromedp.CSS("#owner"), "Alice@Example.com"),
			chromedp.SetValue(chromedp.CSS("#tags"), "lab, berlin"),
			chromedp.Click(chromedp.CSS(`form[action$="/update"] button[type="submit"]`)),
			chromedp.WaitVisible(chromedp.CSS(".notice")),
		)
		checkPage(t, adminTab)
		if got := text(t, adminTab); !strings.Contains(got, "Owner and tags saved.") || !strings.Contains(got, "berlin, lab") {
			t.Errorf("after saving the page says:\n%s", got)
		}
		ev := e.events(escrow.AuditFilter{Action: escrow.ActionDeviceUpdate})
		if len(ev) != 1 || ev[0].Detail != "device LT-0042: tags [] -> [berlin lab]" {
			t.Fatalf("device.update events %+v", ev)
		}
	})

	t.Run("alice now gets her key at once, from her laptop only", func(t *testing.T) {
		browserRun(t, aliceTab, chromedp.Navigate(base+"/my"), waitView("self"))
		if got := text(t, aliceTab); !strings.Contains(got, "LT-0042") || strings.Contains(got, "LT-ALICE") {
			t.Errorf("alice's devices after the dispute:\n%s", got)
		}
		lookup(t, aliceTab, ks[0].KeyID[:8])
		if got := keyShown(t, aliceTab, ks[0].KeyID); got != ks[0].Password {
			t.Fatalf("self-service shows %s, the laptop escrowed %s", got, ks[0].Password)
		}
		if strings.Contains(text(t, aliceTab), ks[1].Password) {
			t.Fatal("self-service shows the look-alike's junk")
		}
	})

	t.Run("a helpdesk scoped to the tag sees the laptop, not the look-alike", func(t *testing.T) {
		ctx := b.Tab(t)
		signIn(t, ctx, base, "lab@example.com", "devices")
		browserRun(t, ctx, chromedp.Navigate(base+"/devices/"+real.ID+"/security"), waitView("device_security"))
		checkPage(t, ctx)
		vol := evaluate[string](t, ctx, `Array.from(document.querySelectorAll("main table")[0].querySelectorAll("tbody tr")).map(r => r.innerText).join("|")`)
		if !strings.Contains(vol, "Locked") {
			t.Errorf("the locked data drive is not shown Locked: %q", vol)
		}
		shared := evaluate[string](t, ctx, `Array.from(document.querySelectorAll(".shared-key")).map(s => s.innerText).join("|")`)
		if !strings.Contains(shared, "1 outside your scope") || strings.Contains(shared, "LT-ALICE") {
			t.Errorf("the helpdesk's shared key note %q, want the look-alike counted, not named", shared)
		}
		before := len(e.events(escrow.AuditFilter{Outcome: string(escrow.OutcomeDenied)}))
		browserRun(t, ctx, chromedp.Navigate(base+"/devices/"+planted.ID), waitView("error"))
		denied := e.events(escrow.AuditFilter{Outcome: string(escrow.OutcomeDenied)})
		if len(denied)-before != 1 || denied[len(denied)-1].Action != escrow.ActionDeviceRead || denied[len(denied)-1].DeviceID != planted.ID {
			t.Errorf("opening an out-of-scope device recorded %+v", denied[before:])
		}
	})
}
