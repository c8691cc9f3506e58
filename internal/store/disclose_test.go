package store_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// assertNothingDisclosed fails unless d is the zero Disclosure and carries none of the
// passwords anywhere.
func assertNothingDisclosed(t *testing.T, d escrow.Disclosure, passwords ...string) {
	t.Helper()
	if !reflect.DeepEqual(d, escrow.Disclosure{}) {
		t.Errorf("Disclose returned %+v on failure, want the zero Disclosure", d)
	}
	dump := fmt.Sprintf("%#v", d)
	for _, p := range passwords {
		if containsSecret([]byte(dump), p) {
			t.Errorf("a failed Disclose returned key material")
		}
	}
}

func TestMovedCiphertextDoesNotOpen(t *testing.T) {
	t.Parallel()
	type key struct {
		device int // index into the enrolled devices
		volume string
		sample sample
	}
	tests := []struct {
		name   string
		from   key
		to     key
		target int // the device whose disclosure must fail
	}{
		{"to another device's key", key{0, osVolume, xts128}, key{1, osVolume, cbc128}, 1},
		// AAD binds the device too: the same key ID on another computer is another row.
		{"to the same key ID on another device", key{0, usbVolume, togo}, key{1, usbVolume, sample{togo.keyID, cbc128.password}}, 1},
		{"to another key of the same device", key{0, osVolume, xts128}, key{0, dataVolume, cbc128}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			devices := []escrow.Enrolled{e.enroll("LT-0042", ""), e.enroll("LT-0043", "")}
			from, to := devices[tt.from.device], devices[tt.to.device]
			e.escrowPassword(from, tt.from.volume, tt.from.sample)
			e.escrowPassword(to, tt.to.volume, tt.to.sample)

			raw := e.raw()
			e.exec(raw, `UPDATE recovery_keys SET (ciphertext, wrapped_key) =
				(SELECT ciphertext, wrapped_key FROM recovery_keys WHERE device_id = $1 AND key_id = $2)
				WHERE device_id = $3 AND key_id = $4`, from.DeviceID, tt.from.sample.keyID, to.DeviceID, tt.to.sample.keyID)
			target := devices[tt.target]

			d, err := e.db.Disclose(e.ctx, adminOrigin, target.DeviceID, asAdmin("forgotten PIN"), allowAll)
			wantCode(t, err, escrow.CodeInternal)
			assertNothingDisclosed(t, d, tt.from.sample.password, tt.to.sample.password)
			if msg := err.Error(); containsSecret([]byte(msg), tt.from.sample.password) || containsSecret([]byte(msg), tt.to.sample.password) {
				t.Errorf("error repeats key material: %v", err)
			}

			reads := e.events(escrow.AuditFilter{Action: escrow.ActionKeyRead, DeviceID: target.DeviceID, Outcome: string(escrow.OutcomeSuccess)})
			if len(reads) != 0 {
				t.Errorf("key.read success events committed for a disclosure that failed: %+v", reads)
			}
			for _, k := range e.keys(escrow.KeyFilter{DeviceID: target.DeviceID}) {
				if k.AccessCount != 0 || !k.LastAccessedAt.IsZero() {
					t.Errorf("key %s counted as accessed: %d at %v", k.KeyID, k.AccessCount, k.LastAccessedAt)
				}
			}
			if rs := e.rotations(raw, target.DeviceID); len(rs) != 0 {
				t.Errorf("a failed disclosure scheduled rotations: %+v", rs)
			}
		})
	}
}

func TestDiscloseFailsClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	en := e.enroll("LT-0042", "")
	e.escrowPassword(en, osVolume, xts128)
	e.escrowPassword(en, dataVolume, cbc128)
	data := onVolume(dataVolume, cbc128.keyID)
	data.MountPoint, data.Type = "D:", escrow.VolumeFixedData
	e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID), data}})

	raw := e.raw()
	e.failAuditWrites(raw, escrow.ActionKeyRead)
	before := e.countEvents(escrow.AuditFilter{})

	d, err := e.db.Disclose(e.ctx, adminOrigin, en.DeviceID, asAdmin("forgotten PIN"), allowAll)
	wantCode(t, err, escrow.CodeUnavailable)
	assertNothingDisclosed(t, d, xts128.password, cbc128.password)
	if after := e.countEvents(escrow.AuditFilter{}); after != before {
		t.Errorf("%d audit events committed by a disclosure whose audit write failed", after-before)
	}
	for _, k := range e.keys(escrow.KeyFilter{DeviceID: en.DeviceID}) {
		if k.AccessCount != 0 || !k.LastAccessedAt.IsZero() {
			t.Errorf("key %s counted as accessed although nothing was disclosed: %d", k.KeyID, k.AccessCount)
		}
	}
	if rs := e.rotations(raw, en.DeviceID); len(rs) != 0 {
		t.Errorf("rotations scheduled by a disclosure that did not happen: %+v", rs)
	}

	e.allowAuditWrites(raw)
	e.clock.Advance(time.Minute)
	now := e.clock.Now()
	d = e.disclose(en.DeviceID)
	want := map[string]string{xts128.keyID: xts128.password, cbc128.keyID: cbc128.password}
	if len(d.Keys) != len(want) {
		t.Fatalf("disclosed %d keys, want %d", len(d.Keys), len(want))
	}
	for _, k := range d.Keys {
		if k.Material != want[k.KeyID] || k.AccessCount != 1 || !k.LastAccessedAt.Equal(now) {
			t.Errorf("disclosed %s: material right = %v, accessCount %d, lastAccessedAt %v",
				k.KeyID, k.Material == want[k.KeyID], k.AccessCount, k.LastAccessedAt)
		}
	}
	if d.Device.ID != en.DeviceID || d.Device.Name != "LT-0042" {
		t.Errorf("disclosure device = %+v", d.Device.Device)
	}

	reads := e.events(escrow.AuditFilter{Action: escrow.ActionKeyRead, DeviceID: en.DeviceID})
	if len(reads) != len(want) {
		t.Fatalf("%d key.read events, want one per key disclosed (%d)", len(reads), len(want))
	}
	seen := map[string]bool{}
	for _, ev := range reads {
		if ev.Reason != "forgotten PIN" || ev.Actor != adminOrigin.Actor || ev.Source != adminOrigin.Source ||
			ev.Outcome != escrow.OutcomeSuccess || ev.IP != adminOrigin.IP || ev.UserAgent != adminOrigin.UserAgent || !ev.Time.Equal(now) {
			t.Errorf("key.read event = %+v", ev)
		}
		if _, ok := want[ev.KeyID]; !ok || seen[ev.KeyID] {
			t.Errorf("key.read event for key %q: not a disclosed key, or twice", ev.KeyID)
		}
		seen[ev.KeyID] = true
	}
	for _, k := range e.keys(escrow.KeyFilter{DeviceID: en.DeviceID}) {
		if k.AccessCount != 1 || !k.LastAccessedAt.Equal(now) {
			t.Errorf("stored key %s: accessCount %d, lastAccessedAt %v; want 1, %v", k.KeyID, k.AccessCount, k.LastAccessedAt, now)
		}
	}
	if n, err := e.db.VerifyAudit(e.ctx); err != nil || n != int64(e.countEvents(escrow.AuditFilter{})) {
		t.Errorf("VerifyAudit = %d, %v", n, err)
	}
}

func TestDiscloseDenied(t *testing.T) {
	t.Parallel()
	const unknown = "9b2e4c1a-7d3f-4e5a-8b6c-0d1e2f3a4b5c"
	tests := []struct {
		name     string
		deviceID func(en escrow.Enrolled) string
		allowed  bool
		want     escrow.Code
	}{
		{"not allowed", func(en escrow.Enrolled) string { return en.DeviceID }, false, escrow.CodeForbidden},
		{"unknown device", func(escrow.Enrolled) string { return unknown }, true, escrow.CodeNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			en := e.enroll("LT-0042", "alice@example.com")
			e.escrowPassword(en, osVolume, xts128)
			deviceID := tt.deviceID(en)

			var asked []escrow.Device
			var settings escrow.Settings
			d, err := e.db.Disclose(e.ctx, helpdeskOrigin, deviceID, asAdmin("hardware change"), func(dev escrow.Device, s escrow.Settings) bool {
				asked, settings = append(asked, dev), s
				return tt.allowed
			})
			wantCode(t, err, tt.want)
			assertNothingDisclosed(t, d, xts128.password)
			if tt.want == escrow.CodeForbidden {
				// The decision needs the device (its owner, its tags) and the live settings.
				if len(asked) != 1 || asked[0].ID != en.DeviceID || asked[0].OwnerUPN != "alice@example.com" {
					t.Errorf("allowed was asked about %+v", asked)
				}
				if settings != escrow.DefaultSettings() {
					t.Errorf("allowed got settings %+v, want the defaults", settings)
				}
			}

			ev := e.events(escrow.AuditFilter{Action: escrow.ActionKeyRead})
			if len(ev) != 1 {
				t.Fatalf("key.read events = %+v, want one denied", ev)
			}
			if ev[0].Outcome != escrow.OutcomeDenied || ev[0].DeviceID != deviceID || ev[0].Reason != "hardware change" ||
				ev[0].Actor != helpdeskOrigin.Actor || ev[0].Source != helpdeskOrigin.Source {
				t.Errorf("denied event = %+v", ev[0])
			}
			if k := e.key(en.DeviceID, xts128.keyID); k.AccessCount != 0 {
				t.Errorf("accessCount = %d after a denied view", k.AccessCount)
			}
		})
	}
}

func TestDiscloseRetention(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	en := e.enroll("LT-0042", "")
	e.escrowPassword(en, osVolume, xts128)
	e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID)}})
	e.clock.Advance(time.Hour)
	e.escrowPassword(en, osVolume, cbc128)
	e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, cbc128.keyID)}})
	supersededAt := e.clock.Now()
	retainUntil := supersededAt.Add(7 * 24 * time.Hour)
	if k := e.key(en.DeviceID, xts128.keyID); k.Status != escrow.KeySuperseded || !k.RetainUntil.Equal(retainUntil) {
		t.Fatalf("old key: %s until %v, want superseded until %v", k.Status, k.RetainUntil, retainUntil)
	}

	steps := []struct {
		name string
		at   time.Time
		want []string
	}{
		{"just superseded", supersededAt, []string{xts128.password, cbc128.password}},
		{"last instant of retention", retainUntil.Add(-time.Microsecond), []string{xts128.password, cbc128.password}},
		{"retention over", retainUntil, []string{cbc128.password}},
		{"long after", retainUntil.Add(30 * 24 * time.Hour), []string{cbc128.password}},
	}
	for _, step := range steps {
		e.clock.Advance(step.at.Sub(e.clock.Now()))
		d := e.disclose(en.DeviceID)
		var got []string
		for _, k := range d.Keys {
			got = append(got, k.Material)
			if k.KeyID == xts128.keyID && k.Status != escrow.KeySuperseded {
				t.Errorf("%s: old key disclosed as %s", step.name, k.Status)
			}
		}
		if strings.Join(got, ",") != strings.Join(step.want, ",") {
			t.Errorf("%s: disclosed %d keys %v, want %d", step.name, len(got), keyIDs(d.Keys), len(step.want))
		}
	}
}

func keyIDs(keys []escrow.DisclosedKey) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.KeyID
	}
	return out
}
