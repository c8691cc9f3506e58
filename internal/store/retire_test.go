package store_test

import (
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// retireFixture is a device with two encrypted volumes, an active key on each, and an open
// rotation of the operating-system volume; beside it a device that stays in service.
func retireFixture(t *testing.T, e *env) (retired, kept escrow.Enrolled) {
	t.Helper()
	retired = e.enroll("LT-0042", "alice@example.com")
	e.escrowPassword(retired, osVolume, xts128)
	e.escrowPassword(retired, dataVolume, cbc128)
	data := onVolume(dataVolume, cbc128.keyID)
	data.MountPoint, data.Type = "D:", escrow.VolumeFixedData
	e.report(retired, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID), data}})
	if _, err := e.db.RequestRotation(e.ctx, adminOrigin, retired.DeviceID, osVolume, asAdmin("scheduled"), allowDevice); err != nil {
		t.Fatalf("RequestRotation: %v", err)
	}
	kept = e.enroll("LT-0043", "bob@example.com")
	e.escrowPassword(kept, osVolume, togo)
	e.report(kept, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, togo.keyID)}})
	return retired, kept
}

func TestRetireDevice(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	en, kept := retireFixture(t, e)
	raw := e.raw()
	e.clock.Advance(time.Minute)
	now := e.clock.Now()

	_, err := e.db.RetireDevice(e.ctx, adminOrigin, en.DeviceID, "  ")
	wantCode(t, err, escrow.CodeInvalid)
	if _, err := e.db.RetireDevice(e.ctx, adminOrigin, "00000000-0000-4000-8000-000000000000", "wiped"); escrow.ErrorCode(err) != escrow.CodeNotFound {
		t.Errorf("retire an unknown device: %v, want not found", err)
	}

	d, err := e.db.RetireDevice(e.ctx, adminOrigin, en.DeviceID, "wiped and sold")
	if err != nil {
		t.Fatalf("RetireDevice: %v", err)
	}
	if !d.RetiredAt.Equal(now) || d.RetiredBy != adminOrigin.Actor.Name || d.RetireReason != "wiped and sold" || d.ID != en.DeviceID {
		t.Errorf("retired device = %+v", d.Device)
	}

	// The token answers like an unknown one, at once, and every agent write is refused.
	if _, err := e.db.AuthenticateDevice(e.ctx, en.DeviceToken); escrow.ErrorCode(err) != escrow.CodeUnauthorized {
		t.Errorf("AuthenticateDevice after retire: %v, want unauthorized", err)
	}
	if _, err := e.db.Escrow(e.ctx, deviceOrigin(en), en.DeviceID, passwordRequest(osVolume, genSample(1))); escrow.ErrorCode(err) != escrow.CodeUnauthorized {
		t.Errorf("Escrow after retire: %v, want unauthorized", err)
	}
	if _, err := e.db.ApplyReport(e.ctx, deviceOrigin(en), en.DeviceID, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID)}}); escrow.ErrorCode(err) != escrow.CodeUnauthorized {
		t.Errorf("ApplyReport after retire: %v, want unauthorized", err)
	}
	if _, err := e.db.Commands(e.ctx, deviceOrigin(en), en.DeviceID); escrow.ErrorCode(err) != escrow.CodeUnauthorized {
		t.Errorf("Commands after retire: %v, want unauthorized", err)
	}
	if _, err := e.db.AuthenticateDevice(e.ctx, kept.DeviceToken); err != nil {
		t.Errorf("the other device's token: %v", err)
	}

	// Open rotations failed, saying why.
	rs := e.rotations(raw, en.DeviceID)
	if len(rs) != 1 || rs[0].status != string(escrow.RotationFailed) {
		t.Fatalf("rotations after retire = %+v, want one failed", rs)
	}
	var message string
	if err := raw.QueryRowContext(e.ctx, `SELECT message FROM rotations WHERE id = $1`, rs[0].id).Scan(&message); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(message, "retired") {
		t.Errorf("rotation message = %q, want it to say the device was retired", message)
	}

	// Active keys superseded, kept for the retention period, and still listed and viewable.
	retainUntil := now.Add(7 * 24 * time.Hour)
	for _, k := range e.keys(escrow.KeyFilter{DeviceID: en.DeviceID}) {
		if k.Status != escrow.KeySuperseded || !k.RetainUntil.Equal(retainUntil) {
			t.Errorf("key %s: status %s, retainUntil %v; want superseded until %v", k.KeyID, k.Status, k.RetainUntil, retainUntil)
		}
	}
	if got := e.disclose(en.DeviceID); len(got.Keys) != 2 {
		t.Errorf("disclosed %d keys of the retired device, want 2", len(got.Keys))
	}
	if k := e.key(kept.DeviceID, togo.keyID); k.Status != escrow.KeyActive {
		t.Errorf("the other device's key is %s", k.Status)
	}

	// One device.retire event, with the reason; the key and rotation changes are audited too.
	ev := e.events(escrow.AuditFilter{Action: escrow.ActionDeviceRetire})
	if len(ev) != 1 || ev[0].DeviceID != en.DeviceID || ev[0].Reason != "wiped and sold" || ev[0].Outcome != escrow.OutcomeSuccess ||
		!strings.Contains(ev[0].Detail, "1 open rotations failed, 2 active keys superseded") {
		t.Errorf("device.retire events = %+v", ev)
	}
	if n := e.countEvents(escrow.AuditFilter{Action: escrow.ActionKeySupersede, DeviceID: en.DeviceID}); n != 2 {
		t.Errorf("%d key.supersede events, want 2", n)
	}
	if n := e.countEvents(escrow.AuditFilter{Action: escrow.ActionRotateFail, DeviceID: en.DeviceID}); n != 1 {
		t.Errorf("%d key.rotate.fail events, want 1", n)
	}

	// Gone from the compliance views; still there when asked for.
	list, _, err := e.db.ListDevices(e.ctx, escrow.DeviceFilter{Scope: allScope})
	if err != nil || len(list) != 1 || list[0].ID != kept.DeviceID {
		t.Errorf("ListDevices = %d devices, %v; want only the device in service", len(list), err)
	}
	list, _, err = e.db.ListDevices(e.ctx, escrow.DeviceFilter{Scope: allScope, Retired: true})
	if err != nil || len(list) != 1 || list[0].ID != en.DeviceID || !list[0].RetiredAt.Equal(now) {
		t.Errorf("ListDevices retired = %+v, %v; want the retired device", list, err)
	}
	rep, err := e.db.EscrowReport(e.ctx, allScope)
	if err != nil || rep.Total != 1 || rep.Counts[escrow.StatusEscrowed] != 1 || len(rep.Problems) != 0 {
		t.Errorf("EscrowReport = %+v, %v; want the device in service only", rep, err)
	}
	census, err := e.db.Census(e.ctx)
	if err != nil {
		t.Fatalf("Census: %v", err)
	}
	total := 0
	for _, n := range census.Devices {
		total += n
	}
	if total != 1 || census.Devices[escrow.StatusEscrowed] != 1 {
		t.Errorf("census devices = %v, want the device in service only", census.Devices)
	}
	if got := e.device(en.DeviceID); !got.RetiredAt.Equal(now) {
		t.Errorf("GetDevice retiredAt = %v", got.RetiredAt)
	}

	// Retiring again is a conflict and changes nothing.
	before := e.countEvents(escrow.AuditFilter{})
	_, err = e.db.RetireDevice(e.ctx, adminOrigin, en.DeviceID, "again")
	wantCode(t, err, escrow.CodeConflict)
	if after := e.countEvents(escrow.AuditFilter{}); after != before {
		t.Errorf("a refused retire wrote %d events", after-before)
	}

	// A new device enrolls as before.
	e.enroll("LT-0044", "")

	// After the retention period, the existing purge job destroys the material.
	e.clock.Advance(retainUntil.Sub(e.clock.Now()))
	res, err := e.db.RunJobs(e.ctx)
	if err != nil || res.Purged != 2 {
		t.Fatalf("RunJobs = %+v, %v; want 2 purged", res, err)
	}
	for _, k := range e.keys(escrow.KeyFilter{DeviceID: en.DeviceID}) {
		if k.Status != escrow.KeyPurged {
			t.Errorf("key %s after retention: %s, want purged", k.KeyID, k.Status)
		}
	}
	if n := e.countEvents(escrow.AuditFilter{Action: escrow.ActionKeyPurge, DeviceID: en.DeviceID}); n != 2 {
		t.Errorf("%d key.purge events, want 2", n)
	}
	if got := e.disclose(en.DeviceID); len(got.Keys) != 0 {
		t.Errorf("disclosed %d keys after purge, want none", len(got.Keys))
	}
}

func TestRetireDeviceFailsClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	en, _ := retireFixture(t, e)
	raw := e.raw()
	e.failAuditWrites(raw, escrow.ActionDeviceRetire)
	before := e.countEvents(escrow.AuditFilter{})

	_, err := e.db.RetireDevice(e.ctx, adminOrigin, en.DeviceID, "wiped")
	wantCode(t, err, escrow.CodeUnavailable)
	if after := e.countEvents(escrow.AuditFilter{}); after != before {
		t.Errorf("%d audit events committed by a retire whose audit write failed", after-before)
	}
	if d := e.device(en.DeviceID); d.Retired() {
		t.Errorf("device retired although its audit write failed: %+v", d.Device)
	}
	if _, err := e.db.AuthenticateDevice(e.ctx, en.DeviceToken); err != nil {
		t.Errorf("token refused after a failed retire: %v", err)
	}
	if rs := openRotations(e.rotations(raw, en.DeviceID)); len(rs) != 1 {
		t.Errorf("open rotations after a failed retire = %+v, want the one requested", rs)
	}
	for _, k := range e.keys(escrow.KeyFilter{DeviceID: en.DeviceID}) {
		if k.Status != escrow.KeyActive || !k.RetainUntil.IsZero() {
			t.Errorf("key %s after a failed retire: %s until %v", k.KeyID, k.Status, k.RetainUntil)
		}
	}

	e.allowAuditWrites(raw)
	if _, err := e.db.RetireDevice(e.ctx, adminOrigin, en.DeviceID, "wiped"); err != nil {
		t.Fatalf("RetireDevice once the audit trail works: %v", err)
	}
}
