package store_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// escrowedDevice is a device whose OS volume has BitLocker on and xts128 escrowed.
func (e *env) escrowedDevice() escrow.Enrolled {
	e.t.Helper()
	en := e.enroll("LT-0042", "")
	e.escrowPassword(en, osVolume, xts128)
	e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID)}})
	if got := e.status(en.DeviceID); got != escrow.StatusEscrowed {
		e.t.Fatalf("escrowStatus = %s, want escrowed", got)
	}
	return en
}

func TestRequestRotationRefused(t *testing.T) {
	t.Parallel()
	const unknown = "9b2e4c1a-7d3f-4e5a-8b6c-0d1e2f3a4b5c"
	tests := []struct {
		name     string
		volumes  []escrow.ReportedVolume
		deviceID string // "" for the enrolled device
		volumeID string
		allowed  bool
		want     escrow.Code
		outcome  escrow.Outcome // of the one key.rotate.request event
	}{
		{"BitLocker off everywhere", []escrow.ReportedVolume{offVolume(osVolume), offVolume(dataVolume)}, "", "", true, escrow.CodeNotEncrypted, escrow.OutcomeError},
		{"the named volume is off", []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID), offVolume(dataVolume)}, "", dataVolume, true, escrow.CodeNotEncrypted, escrow.OutcomeError},
		{"no such volume", []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID)}, "", usbVolume, true, escrow.CodeNotFound, escrow.OutcomeDenied},
		{"no such device", nil, unknown, "", true, escrow.CodeNotFound, escrow.OutcomeDenied},
		{"not allowed", []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID)}, "", "", false, escrow.CodeForbidden, escrow.OutcomeDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			en := e.enroll("LT-0042", "")
			e.escrowPassword(en, osVolume, xts128)
			if tt.volumes != nil {
				e.report(en, escrow.Report{Volumes: tt.volumes})
			}
			deviceID := en.DeviceID
			if tt.deviceID != "" {
				deviceID = tt.deviceID
			}
			before := e.countEvents(escrow.AuditFilter{Action: escrow.ActionRotateRequest})
			rs, err := e.db.RequestRotation(e.ctx, adminOrigin, deviceID, tt.volumeID, asAdmin("TPM replaced"), func(escrow.Device) bool { return tt.allowed })
			wantCode(t, err, tt.want)
			if len(rs) != 0 {
				t.Errorf("rotations returned with the error: %+v", rs)
			}
			if open := e.rotations(e.raw(), en.DeviceID); len(open) != 0 {
				t.Errorf("rotations stored: %+v", open)
			}
			ev := e.events(escrow.AuditFilter{Action: escrow.ActionRotateRequest})[before:]
			if len(ev) != 1 || ev[0].Outcome != tt.outcome || ev[0].DeviceID != deviceID || ev[0].Reason != "TPM replaced" {
				t.Errorf("events = %+v, want one key.rotate.request with outcome %s", ev, tt.outcome)
			}
		})
	}
}

func TestRotationLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	en := e.escrowedDevice()
	raw := e.raw()

	rs, err := e.db.RequestRotation(e.ctx, helpdeskOrigin, en.DeviceID, "", asAdmin("key shown to the user"), allowDevice)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 {
		t.Fatalf("rotations = %+v, want one for the one encrypted volume", rs)
	}
	r := rs[0]
	if r.Status != escrow.RotationRequested || r.VolumeID != osVolume || r.KeyID != xts128.keyID || r.Trigger != escrow.TriggerManual ||
		r.DeviceID != en.DeviceID || r.RequestedBy != helpdeskOrigin.Actor.Name || !r.RequestedAt.Equal(e.clock.Now()) || r.ID == "" {
		t.Errorf("rotation = %+v", r)
	}
	if got := e.status(en.DeviceID); got != escrow.StatusPending {
		t.Errorf("escrowStatus with a rotation open = %s, want pending", got)
	}

	// A second trigger joins the open rotation.
	again, err := e.db.RequestRotation(e.ctx, adminOrigin, en.DeviceID, osVolume, asAdmin("again"), allowDevice)
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 1 || again[0].ID != r.ID {
		t.Errorf("second request = %+v, want the open rotation %s", again, r.ID)
	}
	if open := openRotations(e.rotations(raw, en.DeviceID)); len(open) != 1 {
		t.Errorf("open rotations = %+v, want exactly one", open)
	}

	e.clock.Advance(time.Minute)
	cmds, err := e.db.Commands(e.ctx, deviceOrigin(en), en.DeviceID)
	if err != nil {
		t.Fatal(err)
	}
	want := escrow.Command{ID: r.ID, Type: escrow.CommandRotate, VolumeID: osVolume, KeyID: xts128.keyID}
	if len(cmds) != 1 || cmds[0] != want {
		t.Fatalf("commands = %+v, want [%+v]", cmds, want)
	}
	if rows := e.rotations(raw, en.DeviceID); len(rows) != 1 || rows[0].status != string(escrow.RotationDelivered) {
		t.Fatalf("rotation after delivery: %+v", rows)
	}
	// Fetching again hands out the same command but records no second delivery.
	if cmds, err := e.db.Commands(e.ctx, deviceOrigin(en), en.DeviceID); err != nil || len(cmds) != 1 || cmds[0] != want {
		t.Errorf("second Commands = %+v, %v", cmds, err)
	}
	if ev := e.events(escrow.AuditFilter{Action: escrow.ActionRotateDeliver}); len(ev) != 1 || ev[0].DeviceID != en.DeviceID || ev[0].KeyID != xts128.keyID {
		t.Errorf("key.rotate.deliver events = %+v, want one", ev)
	}

	// The agent must escrow the new password before it reports completion.
	err = e.db.FinishCommand(e.ctx, deviceOrigin(en), en.DeviceID, r.ID, escrow.CommandResult{Completed: true, NewKeyID: cbc128.keyID})
	wantCode(t, err, escrow.CodeConflict)
	if rows := e.rotations(raw, en.DeviceID); rows[0].status != string(escrow.RotationDelivered) {
		t.Errorf("refused completion changed the rotation to %s", rows[0].status)
	}
	if k := e.key(en.DeviceID, xts128.keyID); k.Status != escrow.KeyActive {
		t.Errorf("refused completion made the old key %s", k.Status)
	}

	e.escrowPassword(en, osVolume, cbc128)
	e.clock.Advance(10 * time.Minute)
	finished := e.clock.Now()
	if err := e.db.FinishCommand(e.ctx, deviceOrigin(en), en.DeviceID, r.ID, escrow.CommandResult{Completed: true, NewKeyID: cbc128.keyID, Message: "ok"}); err != nil {
		t.Fatalf("FinishCommand: %v", err)
	}
	rows := e.rotations(raw, en.DeviceID)
	if len(rows) != 1 || rows[0].status != string(escrow.RotationCompleted) || rows[0].newKeyID != cbc128.keyID {
		t.Errorf("rotation after completion: %+v", rows)
	}
	old := e.key(en.DeviceID, xts128.keyID)
	if old.Status != escrow.KeySuperseded || !old.SupersededAt.Equal(finished) || !old.RetainUntil.Equal(finished.Add(7*24*time.Hour)) {
		t.Errorf("old key: %s at %v until %v; want superseded at %v for 7 days", old.Status, old.SupersededAt, old.RetainUntil, finished)
	}
	if k := e.key(en.DeviceID, cbc128.keyID); k.Status != escrow.KeyActive {
		t.Errorf("new key is %s", k.Status)
	}
	if cmds, err := e.db.Commands(e.ctx, deviceOrigin(en), en.DeviceID); err != nil || len(cmds) != 0 {
		t.Errorf("commands after completion = %+v, %v", cmds, err)
	}

	// A retried result is accepted; a contradicting one is not.
	if err := e.db.FinishCommand(e.ctx, deviceOrigin(en), en.DeviceID, r.ID, escrow.CommandResult{Completed: true, NewKeyID: cbc128.keyID}); err != nil {
		t.Errorf("retried completion: %v", err)
	}
	err = e.db.FinishCommand(e.ctx, deviceOrigin(en), en.DeviceID, r.ID, escrow.CommandResult{Message: "late failure"})
	wantCode(t, err, escrow.CodeConflict)

	e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, cbc128.keyID)}})
	if got := e.status(en.DeviceID); got != escrow.StatusEscrowed {
		t.Errorf("escrowStatus after the rotation = %s, want escrowed", got)
	}
	if k := e.key(en.DeviceID, xts128.keyID); !k.RetainUntil.Equal(finished.Add(7 * 24 * time.Hour)) {
		t.Errorf("the report moved the retention of the old key to %v", k.RetainUntil)
	}

	for _, action := range []string{escrow.ActionRotateRequest, escrow.ActionRotateDeliver, escrow.ActionRotateComplete} {
		ev := e.events(escrow.AuditFilter{Action: action, DeviceID: en.DeviceID, Outcome: string(escrow.OutcomeSuccess)})
		if len(ev) == 0 {
			t.Errorf("no %s event", action)
		}
	}
	complete := e.events(escrow.AuditFilter{Action: escrow.ActionRotateComplete, Outcome: string(escrow.OutcomeSuccess)})
	if len(complete) != 1 || complete[0].KeyID != cbc128.keyID || complete[0].Actor.ID != en.DeviceID {
		t.Errorf("key.rotate.complete events = %+v", complete)
	}
	if n, err := e.db.VerifyAudit(e.ctx); err != nil || n != int64(e.countEvents(escrow.AuditFilter{})) {
		t.Errorf("VerifyAudit = %d, %v", n, err)
	}
}

func TestFinishCommandRefused(t *testing.T) {
	t.Parallel()
	dataKey := sample{"D47A0C11-2B3C-4D5E-8F60-718293A4B5C6", genSample(7).password}
	tests := []struct {
		name    string
		prepare func(e *env, en, other escrow.Enrolled)
		device  func(en, other escrow.Enrolled) string
		command func(id string) string
		result  escrow.CommandResult
		want    escrow.Code
	}{
		{"new key not escrowed", nil, nil, nil, escrow.CommandResult{Completed: true, NewKeyID: cbc128.keyID}, escrow.CodeConflict},
		{"no new key named", nil, nil, nil, escrow.CommandResult{Completed: true}, escrow.CodeConflict},
		{"new key escrowed for another volume", func(e *env, en, _ escrow.Enrolled) {
			e.escrowPassword(en, dataVolume, dataKey)
		}, nil, nil, escrow.CommandResult{Completed: true, NewKeyID: dataKey.keyID}, escrow.CodeConflict},
		{"new key escrowed as a recovery key", func(e *env, en, _ escrow.Enrolled) {
			req := passwordRequest(osVolume, cbc128)
			req.Kind, req.Material = escrow.KindRecoveryKey, "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF"
			if _, err := e.db.Escrow(e.ctx, deviceOrigin(en), en.DeviceID, req); err != nil {
				e.t.Fatal(err)
			}
		}, nil, nil, escrow.CommandResult{Completed: true, NewKeyID: cbc128.keyID}, escrow.CodeConflict},
		{"new key escrowed by another device", func(e *env, _, other escrow.Enrolled) {
			e.escrowPassword(other, osVolume, cbc128)
		}, nil, nil, escrow.CommandResult{Completed: true, NewKeyID: cbc128.keyID}, escrow.CodeConflict},
		{"another device's command", func(e *env, _, other escrow.Enrolled) {
			e.escrowPassword(other, osVolume, cbc128)
		}, func(_, other escrow.Enrolled) string { return other.DeviceID }, nil,
			escrow.CommandResult{Completed: true, NewKeyID: cbc128.keyID}, escrow.CodeNotFound},
		{"unknown command", nil, nil, func(string) string { return "00000000-0000-4000-8000-000000000000" },
			escrow.CommandResult{Completed: true, NewKeyID: xts128.keyID}, escrow.CodeNotFound},
		{"new key is the key it replaces", nil, nil, nil, escrow.CommandResult{Completed: true, NewKeyID: xts128.keyID}, escrow.CodeConflict},
		{"message with control characters", nil, nil, nil, escrow.CommandResult{Message: "failed\r\nseq=1"}, escrow.CodeInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			en := e.escrowedDevice()
			other := e.enroll("LT-0043", "")
			rs, err := e.db.RequestRotation(e.ctx, adminOrigin, en.DeviceID, "", asAdmin(""), allowDevice)
			if err != nil {
				t.Fatal(err)
			}
			if tt.prepare != nil {
				tt.prepare(e, en, other)
			}
			deviceID, commandID := en.DeviceID, rs[0].ID
			if tt.device != nil {
				deviceID = tt.device(en, other)
			}
			if tt.command != nil {
				commandID = tt.command(commandID)
			}
			before := e.countEvents(escrow.AuditFilter{})
			err = e.db.FinishCommand(e.ctx, deviceOrigin(en), deviceID, commandID, tt.result)
			wantCode(t, err, tt.want)
			if rows := e.rotations(e.raw(), en.DeviceID); len(rows) != 1 || rows[0].status != string(escrow.RotationRequested) {
				t.Errorf("rotation after a refused result: %+v", rows)
			}
			if k := e.key(en.DeviceID, xts128.keyID); k.Status != escrow.KeyActive {
				t.Errorf("old key is %s after a refused result", k.Status)
			}
			// A refusal is one denied event; invalid input is refused before anything is written.
			// (The key.list is that of e.key above.)
			want := 1
			if tt.want == escrow.CodeInvalid {
				want = 0
			}
			if n := e.countEvents(escrow.AuditFilter{Outcome: string(escrow.OutcomeDenied)}); n != want {
				t.Errorf("%d denied events for a refused result, want %d", n, want)
			}
			if n := e.countEvents(escrow.AuditFilter{}) - before; n != want+1 {
				t.Errorf("%d events written for a refused result, want %d", n-1, want)
			}
		})
	}
}

func TestRotationFailed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	en := e.escrowedDevice()
	raw := e.raw()
	rs, err := e.db.RequestRotation(e.ctx, adminOrigin, en.DeviceID, "", asAdmin(""), allowDevice)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.Commands(e.ctx, deviceOrigin(en), en.DeviceID); err != nil {
		t.Fatal(err)
	}
	if err := e.db.FinishCommand(e.ctx, deviceOrigin(en), en.DeviceID, rs[0].ID, escrow.CommandResult{Message: "0x80310000 TPM busy"}); err != nil {
		t.Fatalf("FinishCommand failed: %v", err)
	}
	if rows := e.rotations(raw, en.DeviceID); len(rows) != 1 || rows[0].status != string(escrow.RotationFailed) {
		t.Errorf("rotation = %+v, want failed", rows)
	}
	d := e.device(en.DeviceID)
	if d.Status.Status != escrow.StatusFailed {
		t.Errorf("escrowStatus = %s, want failed", d.Status.Status)
	}
	for _, v := range d.Volumes {
		if v.ID == osVolume && (v.Status.Status != escrow.StatusFailed || v.Failure == "") {
			t.Errorf("volume status = %+v, failure %q; want failed", v.Status, v.Failure)
		}
	}
	if k := e.key(en.DeviceID, xts128.keyID); k.Status != escrow.KeyActive {
		t.Errorf("the key of a failed rotation is %s, want still active", k.Status)
	}
	ev := e.events(escrow.AuditFilter{Action: escrow.ActionRotateFail})
	if len(ev) != 1 || ev[0].Outcome != escrow.OutcomeError || ev[0].DeviceID != en.DeviceID {
		t.Errorf("key.rotate.fail events = %+v", ev)
	}

	// A failed rotation is closed: the next request opens a new one, and its success clears
	// the failure.
	next, err := e.db.RequestRotation(e.ctx, adminOrigin, en.DeviceID, "", asAdmin("retry"), allowDevice)
	if err != nil {
		t.Fatal(err)
	}
	if len(next) != 1 || next[0].ID == rs[0].ID || next[0].Status != escrow.RotationRequested {
		t.Fatalf("request after a failure = %+v", next)
	}
	e.escrowPassword(en, osVolume, cbc128)
	if err := e.db.FinishCommand(e.ctx, deviceOrigin(en), en.DeviceID, next[0].ID, escrow.CommandResult{Completed: true, NewKeyID: cbc128.keyID}); err != nil {
		t.Fatal(err)
	}
	e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, cbc128.keyID)}})
	if got := e.status(en.DeviceID); got != escrow.StatusEscrowed {
		t.Errorf("escrowStatus after a successful rotation = %s, want escrowed", got)
	}
}

func TestRotationFailedEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	en := e.escrowedDevice()
	rs, err := e.db.RequestRotation(e.ctx, adminOrigin, en.DeviceID, "", asAdmin(""), allowDevice)
	if err != nil {
		t.Fatal(err)
	}
	e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID)},
		Events: []escrow.DeviceEvent{{Type: escrow.EventRotationFailed, VolumeID: osVolume, KeyID: xts128.keyID, Message: "access denied"}}})
	rows := e.rotations(e.raw(), en.DeviceID)
	if len(rows) != 1 || rows[0].id != rs[0].ID || rows[0].status != string(escrow.RotationFailed) {
		t.Errorf("rotation after a rotationFailed event = %+v", rows)
	}
	if got := e.status(en.DeviceID); got != escrow.StatusFailed {
		t.Errorf("escrowStatus = %s, want failed", got)
	}
}

func TestRecoveryUsedOpensRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	en := e.escrowedDevice()
	cmds := e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID)},
		Events: []escrow.DeviceEvent{{Type: escrow.EventRecoveryUsed, VolumeID: osVolume, KeyID: xts128.keyID}}})
	if len(cmds) != 1 || cmds[0].Type != escrow.CommandRotate || cmds[0].VolumeID != osVolume || cmds[0].KeyID != xts128.keyID {
		t.Fatalf("commands answering the report = %+v, want a rotation of the used key", cmds)
	}
	rows := e.rotations(e.raw(), en.DeviceID)
	if len(rows) != 1 || rows[0].id != cmds[0].ID || rows[0].trigger != escrow.TriggerRecoveryUsed || rows[0].status != string(escrow.RotationDelivered) {
		t.Errorf("rotations = %+v", rows)
	}
	if got := e.status(en.DeviceID); got != escrow.StatusPending {
		t.Errorf("escrowStatus = %s, want pending", got)
	}
	// The same event reported again (the agent did not get the answer) opens nothing new.
	e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID)},
		Events: []escrow.DeviceEvent{{Type: escrow.EventRecoveryUsed, VolumeID: osVolume, KeyID: xts128.keyID}}})
	if rows := e.rotations(e.raw(), en.DeviceID); len(rows) != 1 {
		t.Errorf("rotations after a repeated event = %+v, want one", rows)
	}
}

func TestDisclosureOpensOneRotation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		autoRotate string // the stored setting, "" for the default
		concurrent bool
		want       int
	}{
		{"default settings", "", false, 1},
		{"default settings, concurrent views", "", true, 1},
		{"auto-rotation off", "false", false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			en := e.escrowedDevice()
			raw := e.raw()
			if tt.autoRotate != "" {
				if _, err := e.db.UpdateSettings(e.ctx, adminOrigin, map[string]string{"autoRotateOnDisclosure": tt.autoRotate}); err != nil {
					t.Fatal(err)
				}
			}
			view := func() error {
				d, err := e.db.Disclose(e.ctx, adminOrigin, en.DeviceID, asAdmin("forgotten PIN"), allowAll)
				if err == nil && len(d.Keys) != 1 {
					err = fmt.Errorf("disclosed %d keys, want 1", len(d.Keys))
				}
				return err
			}
			if tt.concurrent {
				var wg sync.WaitGroup
				errs := make(chan error, 3)
				for range 3 {
					wg.Go(func() { errs <- view() })
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					if err != nil {
						t.Errorf("Disclose: %v", err)
					}
				}
			} else {
				for range 3 {
					if err := view(); err != nil {
						t.Fatalf("Disclose: %v", err)
					}
				}
			}
			open := openRotations(e.rotations(raw, en.DeviceID))
			if len(open) != tt.want {
				t.Fatalf("open rotations = %+v, want %d", open, tt.want)
			}
			if tt.want == 1 && (open[0].trigger != escrow.TriggerDisclosure || open[0].keyID != xts128.keyID || open[0].volumeID != osVolume) {
				t.Errorf("rotation = %+v, want one of %s triggered by disclosure", open[0], xts128.keyID)
			}
			if n := e.countEvents(escrow.AuditFilter{Action: escrow.ActionKeyRead, Outcome: string(escrow.OutcomeSuccess)}); n != 3 {
				t.Errorf("%d key.read events, want 3", n)
			}
			wantStatus := escrow.StatusEscrowed
			if tt.want == 1 {
				wantStatus = escrow.StatusPending
			}
			if got := e.status(en.DeviceID); got != wantStatus {
				t.Errorf("escrowStatus = %s, want %s", got, wantStatus)
			}
		})
	}
}
