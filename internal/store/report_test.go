package store_test

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

func TestReportStoresVolumesAndProtectors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	en := e.enroll("LT-0042", "")
	e.escrowPassword(en, osVolume, xts128)
	e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID), offVolume(dataVolume)}})

	volumes := e.device(en.DeviceID).Volumes
	if len(volumes) != 2 {
		t.Fatalf("volumes = %+v", volumes)
	}
	byID := map[string]escrow.Volume{}
	for _, v := range volumes {
		byID[v.ID] = v.Volume
	}
	os := byID[osVolume]
	if !os.Present || os.ProtectionStatus != escrow.ProtectionOn || os.EncryptionStatus != escrow.FullyEncrypted || os.MountPoint != "C:" {
		t.Errorf("OS volume = %+v", os)
	}
	if !slices.Equal(protectorIDs(os.Protectors), sortedIDs(onVolume(osVolume, xts128.keyID).Protectors)) {
		t.Errorf("OS volume protectors = %+v", os.Protectors)
	}
	if data := byID[dataVolume]; !data.Present || data.ProtectionStatus != escrow.ProtectionOff || len(data.Protectors) != 0 {
		t.Errorf("data volume = %+v", data)
	}

	// The next report replaces the protector list; nothing of the old one lingers.
	v := onVolume(osVolume, xts128.keyID)
	v.Protectors[0] = escrow.Protector{KeyID: "11111111-2222-4333-8444-555555555555", Type: escrow.ProtectorTPMPin}
	e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{v}})
	got := e.device(en.DeviceID).Volumes
	for _, vd := range got {
		switch vd.ID {
		case osVolume:
			if !slices.Equal(protectorIDs(vd.Protectors), sortedIDs(v.Protectors)) {
				t.Errorf("protectors after second report = %+v", vd.Protectors)
			}
			for _, p := range vd.Protectors {
				if p.KeyID == v.Protectors[0].KeyID && p.Type != escrow.ProtectorTPMPin {
					t.Errorf("protector type = %s, want tpmPin", p.Type)
				}
			}
		case dataVolume:
			// Absent from the last report: kept, but not present.
			if vd.Present {
				t.Error("a volume missing from the last report is still present")
			}
		}
	}
}

func protectorIDs(ps []escrow.Protector) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.KeyID + "/" + string(p.Type)
	}
	return out
}

func sortedIDs(ps []escrow.Protector) []string {
	out := protectorIDs(ps)
	slices.Sort(out)
	return out
}

func TestReportSupersedesMissingProtector(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	en := e.enroll("LT-0042", "")
	e.escrowPassword(en, osVolume, xts128)
	e.escrowPassword(en, osVolume, cbc128)
	usb := passwordRequest(usbVolume, togo)
	usb.MountPoint, usb.VolumeType = "E:", escrow.VolumeRemovable
	if _, err := e.db.Escrow(e.ctx, deviceOrigin(en), en.DeviceID, usb); err != nil {
		t.Fatal(err)
	}
	e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID, cbc128.keyID)}})
	for _, s := range []sample{xts128, cbc128} {
		if k := e.key(en.DeviceID, s.keyID); k.Status != escrow.KeyActive {
			t.Fatalf("key %s is %s after a report listing it", s.keyID, k.Status)
		}
	}

	e.clock.Advance(time.Hour)
	now := e.clock.Now()
	e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, cbc128.keyID)}})
	old := e.key(en.DeviceID, xts128.keyID)
	if old.Status != escrow.KeySuperseded || !old.SupersededAt.Equal(now) || !old.RetainUntil.Equal(now.Add(7*24*time.Hour)) {
		t.Errorf("key gone from the volume: %s at %v until %v; want superseded at %v until %v",
			old.Status, old.SupersededAt, old.RetainUntil, now, now.Add(7*24*time.Hour))
	}
	if k := e.key(en.DeviceID, cbc128.keyID); k.Status != escrow.KeyActive {
		t.Errorf("listed key is %s", k.Status)
	}
	// An unplugged drive drops out of reports; its key is not gone from its volume.
	if k := e.key(en.DeviceID, togo.keyID); k.Status != escrow.KeyActive {
		t.Errorf("key of a volume missing from the report is %s, want active", k.Status)
	}
	ev := e.events(escrow.AuditFilter{Action: escrow.ActionKeySupersede, DeviceID: en.DeviceID})
	if len(ev) != 1 || ev[0].KeyID != xts128.keyID {
		t.Errorf("key.supersede events = %+v", ev)
	}

	e.clock.Advance(time.Hour)
	e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID, cbc128.keyID)}})
	back := e.key(en.DeviceID, xts128.keyID)
	if back.Status != escrow.KeyActive || !back.RetainUntil.IsZero() || !back.SupersededAt.IsZero() {
		t.Errorf("key listed again: %s, superseded %v, retained until %v; want active with neither", back.Status, back.SupersededAt, back.RetainUntil)
	}
}

func TestEscrowStatus(t *testing.T) {
	t.Parallel()
	const grace = time.Hour
	on := func(keys ...string) escrow.Report {
		return escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, keys...)}}
	}
	tests := []struct {
		name  string
		setup func(e *env, en escrow.Enrolled)
		want  escrow.EscrowStatus
	}{
		{"enrolled, not reported", func(e *env, en escrow.Enrolled) {}, escrow.StatusPending},
		{"escrowed, not reported", func(e *env, en escrow.Enrolled) { e.escrowPassword(en, osVolume, xts128) }, escrow.StatusPending},
		{"escrowed", func(e *env, en escrow.Enrolled) {
			e.escrowPassword(en, osVolume, xts128)
			e.report(en, on(xts128.keyID))
		}, escrow.StatusEscrowed},
		{"escrowed and a volume off", func(e *env, en escrow.Enrolled) {
			e.escrowPassword(en, osVolume, xts128)
			e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID), offVolume(dataVolume)}})
		}, escrow.StatusEscrowed},
		{"BitLocker off everywhere", func(e *env, en escrow.Enrolled) {
			os := offVolume(osVolume)
			os.MountPoint, os.Type = "C:", escrow.VolumeOperatingSystem
			e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{os, offVolume(dataVolume)}})
		}, escrow.StatusNotAvailable},
		{"on without escrow, within grace", func(e *env, en escrow.Enrolled) {
			e.report(en, on(xts128.keyID))
			e.clock.Advance(grace - time.Minute)
		}, escrow.StatusPending},
		{"on without escrow, at the end of grace", func(e *env, en escrow.Enrolled) {
			e.report(en, on(xts128.keyID))
			e.clock.Advance(grace)
		}, escrow.StatusPending},
		{"on without escrow, past grace", func(e *env, en escrow.Enrolled) {
			e.report(en, on(xts128.keyID))
			e.clock.Advance(grace + time.Minute)
		}, escrow.StatusFailed},
		{"grace counts from the first report without escrow", func(e *env, en escrow.Enrolled) {
			e.report(en, on(xts128.keyID))
			e.clock.Advance(40 * time.Minute)
			e.report(en, on(xts128.keyID))
			e.clock.Advance(21 * time.Minute)
		}, escrow.StatusFailed},
		{"escrowed late, past grace", func(e *env, en escrow.Enrolled) {
			e.report(en, on(xts128.keyID))
			e.clock.Advance(grace + time.Minute)
			e.escrowPassword(en, osVolume, xts128)
		}, escrow.StatusEscrowed},
		{"suspended without escrow, past grace", func(e *env, en escrow.Enrolled) {
			// Protection off with data still encrypted counts as on (escrow.Volume.Encrypted).
			v := onVolume(osVolume, xts128.keyID)
			v.ProtectionStatus = escrow.ProtectionOff
			e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{v}})
			e.clock.Advance(grace + time.Minute)
		}, escrow.StatusFailed},
		{"encrypting without escrow", func(e *env, en escrow.Enrolled) {
			v := onVolume(osVolume, xts128.keyID)
			v.EncryptionStatus = escrow.EncryptionInProgress
			e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{v}})
		}, escrow.StatusPending},
		{"only a recovery key escrowed", func(e *env, en escrow.Enrolled) {
			req := passwordRequest(osVolume, xts128)
			req.Kind, req.Material = escrow.KindRecoveryKey, strings.Repeat("AB", 32)
			if _, err := e.db.Escrow(e.ctx, deviceOrigin(en), en.DeviceID, req); err != nil {
				e.t.Fatal(err)
			}
			e.report(en, on(xts128.keyID))
			e.clock.Advance(grace + time.Minute)
		}, escrow.StatusFailed},
		{"escrow failed", func(e *env, en escrow.Enrolled) {
			e.escrowPassword(en, osVolume, xts128)
			r := on(xts128.keyID)
			r.Events = []escrow.DeviceEvent{{Type: escrow.EventEscrowFailed, VolumeID: osVolume, KeyID: cbc128.keyID, Message: "server unreachable"}}
			e.report(en, r)
		}, escrow.StatusFailed},
		{"escrow failed, still failed at the next report", func(e *env, en escrow.Enrolled) {
			e.escrowPassword(en, osVolume, xts128)
			r := on(xts128.keyID)
			r.Events = []escrow.DeviceEvent{{Type: escrow.EventEscrowFailed, VolumeID: osVolume, KeyID: cbc128.keyID}}
			e.report(en, r)
			e.clock.Advance(time.Minute)
			e.report(en, on(xts128.keyID))
		}, escrow.StatusFailed},
		{"escrow failed, then escrowed", func(e *env, en escrow.Enrolled) {
			e.escrowPassword(en, osVolume, xts128)
			r := on(xts128.keyID)
			r.Events = []escrow.DeviceEvent{{Type: escrow.EventEscrowFailed, VolumeID: osVolume, KeyID: cbc128.keyID}}
			e.report(en, r)
			e.clock.Advance(time.Minute)
			e.escrowPassword(en, osVolume, cbc128)
			e.report(en, on(xts128.keyID, cbc128.keyID))
		}, escrow.StatusEscrowed},
		{"escrow failed on one volume, escrowed on another", func(e *env, en escrow.Enrolled) {
			e.escrowPassword(en, osVolume, xts128)
			e.escrowPassword(en, dataVolume, cbc128)
			data := onVolume(dataVolume, cbc128.keyID)
			data.MountPoint = "D:"
			e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID), data},
				Events: []escrow.DeviceEvent{{Type: escrow.EventEscrowFailed, VolumeID: osVolume}}})
			e.clock.Advance(time.Minute)
			// A success elsewhere does not clear the failure of the OS volume.
			e.escrowPassword(en, dataVolume, togo)
		}, escrow.StatusFailed},
		{"rotation open", func(e *env, en escrow.Enrolled) {
			e.escrowPassword(en, osVolume, xts128)
			e.report(en, on(xts128.keyID))
			if _, err := e.db.RequestRotation(e.ctx, adminOrigin, en.DeviceID, "", asAdmin(""), allowDevice); err != nil {
				e.t.Fatal(err)
			}
		}, escrow.StatusPending},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			en := e.enroll("LT-0042", "")
			tt.setup(e, en)
			d := e.device(en.DeviceID)
			if d.Status.Status != tt.want {
				t.Errorf("escrowStatus = %s (%s), want %s", d.Status.Status, d.Status.Why, tt.want)
			}
			// The device listing must agree with the device view.
			list, _, err := e.db.ListDevices(e.ctx, escrow.DeviceFilter{Scope: allScope, EscrowStatus: tt.want, Limit: 10})
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 1 || list[0].ID != en.DeviceID {
				t.Errorf("ListDevices with status %s = %d devices", tt.want, len(list))
			}
		})
	}
}

func TestFingerprintVerification(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	en := e.enroll("LT-0042", "")
	other := e.enroll("LT-0043", "")
	e.escrowPassword(en, osVolume, xts128)

	right := fingerprint(en.VerificationKey, xts128.password)
	steps := []struct {
		name        string
		fingerprint string
		refused     bool // the report is malformed and changes nothing
		want        escrow.Verification
		status      escrow.EscrowStatus
		event       escrow.Outcome // the key.verify event written, or "" for none
	}{
		{"right password", right, false, escrow.Verified, escrow.StatusEscrowed, escrow.OutcomeSuccess},
		{"right again", right, false, escrow.Verified, escrow.StatusEscrowed, ""},
		{"another password", fingerprint(en.VerificationKey, cbc128.password), false, escrow.Mismatch, escrow.StatusFailed, escrow.OutcomeError},
		{"another device's verification key", fingerprint(other.VerificationKey, xts128.password), false, escrow.Mismatch, escrow.StatusFailed, ""},
		{"password without hyphens", fingerprint(en.VerificationKey, strings.ReplaceAll(xts128.password, "-", "")), false, escrow.Mismatch, escrow.StatusFailed, ""},
		{"upper-case hex of the right one", strings.ToUpper(right), true, escrow.Mismatch, escrow.StatusFailed, ""},
		{"truncated", right[:62], true, escrow.Mismatch, escrow.StatusFailed, ""},
		{"right once more", right, false, escrow.Verified, escrow.StatusEscrowed, escrow.OutcomeSuccess},
	}
	var verifiedAt time.Time
	for _, step := range steps {
		e.clock.Advance(time.Minute)
		v := onVolume(osVolume, xts128.keyID)
		v.Fingerprints = map[string]string{xts128.keyID: step.fingerprint}
		before := e.events(escrow.AuditFilter{Action: escrow.ActionKeyVerify})
		_, err := e.db.ApplyReport(e.ctx, deviceOrigin(en), en.DeviceID, escrow.Report{Volumes: []escrow.ReportedVolume{v}})
		if step.refused {
			wantCode(t, err, escrow.CodeInvalid)
		} else if err != nil {
			t.Fatalf("%s: ApplyReport: %v", step.name, err)
		}
		after := e.events(escrow.AuditFilter{Action: escrow.ActionKeyVerify})
		switch {
		case step.event == "" && len(after) != len(before):
			t.Errorf("%s: key.verify event written although nothing changed", step.name)
		case step.event != "" && (len(after) != len(before)+1 || after[len(after)-1].Outcome != step.event || after[len(after)-1].KeyID != xts128.keyID):
			t.Errorf("%s: key.verify events %+v, want one more with outcome %s", step.name, after[len(before):], step.event)
		}
		if step.want == escrow.Verified {
			verifiedAt = e.clock.Now()
		}
		k := e.key(en.DeviceID, xts128.keyID)
		if k.Verification != step.want || !k.VerifiedAt.Equal(verifiedAt) {
			t.Errorf("%s: verification %s at %v, want %s at %v", step.name, k.Verification, k.VerifiedAt, step.want, verifiedAt)
		}
		if k.Status != escrow.KeyActive {
			t.Errorf("%s: key is %s", step.name, k.Status)
		}
		if got := e.status(en.DeviceID); got != step.status {
			t.Errorf("%s: escrowStatus %s, want %s", step.name, got, step.status)
		}
	}
}

// SPEC §3: a mismatch "asks the agent to escrow again (command type escrowRecoveryPassword),
// and counts as a failed escrow until fixed".
func TestMismatchAsksForEscrowAgain(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// The disclosure below checks what is held; it must not add a rotation to the commands.
	if _, err := e.db.UpdateSettings(e.ctx, adminOrigin, map[string]string{"autoRotateOnDisclosure": "false"}); err != nil {
		t.Fatal(err)
	}
	en := e.enroll("LT-0042", "")
	// The server holds a password that is not the one on the volume under that key ID.
	onDisk := sample{xts128.keyID, cbc128.password}
	e.escrowPassword(en, osVolume, xts128)
	mismatched := onVolume(osVolume, xts128.keyID)
	mismatched.Fingerprints = map[string]string{xts128.keyID: fingerprint(en.VerificationKey, onDisk.password)}
	cmds := e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{mismatched}})

	var reEscrow escrow.Command
	for _, c := range cmds {
		if c.Type == escrow.CommandReEscrow {
			reEscrow = c
		}
	}
	if reEscrow.ID == "" || reEscrow.VolumeID != osVolume || reEscrow.KeyID != xts128.keyID {
		t.Fatalf("commands after a mismatch = %+v, want %s for %s", cmds, escrow.CommandReEscrow, xts128.keyID)
	}
	if got := e.status(en.DeviceID); got != escrow.StatusFailed {
		t.Errorf("escrowStatus with a mismatch = %s, want failed", got)
	}
	// An agent that missed the answer fetches the same command again.
	again, err := e.db.Commands(e.ctx, deviceOrigin(en), en.DeviceID)
	if err != nil || len(again) != 1 || again[0] != reEscrow {
		t.Errorf("Commands = %+v, %v; want [%+v]", again, err, reEscrow)
	}
	err = e.db.FinishCommand(e.ctx, deviceOrigin(en), en.DeviceID, reEscrow.ID, escrow.CommandResult{Completed: true})
	wantCode(t, err, escrow.CodeConflict)

	if _, err := e.db.Escrow(e.ctx, deviceOrigin(en), en.DeviceID, passwordRequest(osVolume, onDisk)); err != nil {
		t.Fatalf("re-escrow after a mismatch: %v", err)
	}
	if d := e.disclose(en.DeviceID); len(d.Keys) != 1 || d.Keys[0].Material != onDisk.password {
		t.Errorf("after the re-escrow the server does not hold the volume's password")
	}
	if err := e.db.FinishCommand(e.ctx, deviceOrigin(en), en.DeviceID, reEscrow.ID, escrow.CommandResult{Completed: true}); err != nil {
		t.Errorf("completing the re-escrow: %v", err)
	}
	if cmds, err := e.db.Commands(e.ctx, deviceOrigin(en), en.DeviceID); err != nil || len(cmds) != 0 {
		t.Errorf("Commands after the re-escrow = %+v, %v; want none", cmds, err)
	}

	fixed := onVolume(osVolume, xts128.keyID)
	fixed.Fingerprints = map[string]string{xts128.keyID: fingerprint(en.VerificationKey, onDisk.password)}
	e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{fixed}})
	if k := e.key(en.DeviceID, xts128.keyID); k.Verification != escrow.Verified {
		t.Errorf("verification after the re-escrow = %s, want verified", k.Verification)
	}
	if got := e.status(en.DeviceID); got != escrow.StatusEscrowed {
		t.Errorf("escrowStatus after the re-escrow = %s, want escrowed", got)
	}
}

// SPEC §3: Failed holds while "the agent reported a failed escrow ... that has not since
// succeeded". An agent whose escrow answer was lost reports escrowFailed, retries, and is told
// the server already holds the key (200): that escrow has succeeded.
func TestEscrowRetryClearsReportedFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	en := e.enroll("LT-0042", "")
	e.escrowPassword(en, osVolume, xts128)
	r := escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID)},
		Events: []escrow.DeviceEvent{{Type: escrow.EventEscrowFailed, VolumeID: osVolume, KeyID: xts128.keyID, Message: "timeout"}}}
	e.report(en, r)
	if got := e.status(en.DeviceID); got != escrow.StatusFailed {
		t.Fatalf("escrowStatus after escrowFailed = %s, want failed", got)
	}
	created, err := e.db.Escrow(e.ctx, deviceOrigin(en), en.DeviceID, passwordRequest(osVolume, xts128))
	if err != nil || created {
		t.Fatalf("retried Escrow = %v, %v; want false, nil", created, err)
	}
	e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID)}})
	if got := e.status(en.DeviceID); got != escrow.StatusEscrowed {
		t.Errorf("escrowStatus after the retried escrow succeeded = %s, want escrowed", got)
	}
}

func TestReportInvalidStoresNothing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		report escrow.Report
	}{
		{"volume listed twice", escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume), onVolume(osVolume)}}},
		{"unknown protection status", escrow.Report{Volumes: []escrow.ReportedVolume{func() escrow.ReportedVolume {
			v := onVolume(osVolume)
			v.ProtectionStatus = "suspended"
			return v
		}()}}},
		{"fingerprint on a TPM protector", escrow.Report{Volumes: []escrow.ReportedVolume{func() escrow.ReportedVolume {
			v := onVolume(osVolume)
			v.Fingerprints = map[string]string{v.Protectors[0].KeyID: strings.Repeat("0", 64)}
			return v
		}()}}},
		{"event for a volume the device does not have", escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID)},
			Events: []escrow.DeviceEvent{{Type: escrow.EventEscrowFailed, VolumeID: usbVolume}}}},
		{"unknown event", escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID)},
			Events: []escrow.DeviceEvent{{Type: "tpmCleared", VolumeID: osVolume}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			en := e.enroll("LT-0042", "")
			e.escrowPassword(en, osVolume, xts128)
			before := e.countEvents(escrow.AuditFilter{})
			_, err := e.db.ApplyReport(e.ctx, deviceOrigin(en), en.DeviceID, tt.report)
			wantCode(t, err, escrow.CodeInvalid)
			if n := e.countEvents(escrow.AuditFilter{}) - before; n != 0 {
				t.Errorf("%d events written for a refused report", n)
			}
			d := e.device(en.DeviceID)
			if !d.ReportedAt.IsZero() || d.Status.Status != escrow.StatusPending {
				t.Errorf("refused report counted: reportedAt %v, status %s", d.ReportedAt, d.Status.Status)
			}
			for _, v := range d.Volumes {
				if v.ProtectionStatus != "" || len(v.Protectors) != 0 {
					t.Errorf("refused report stored volume %+v", v.Volume)
				}
			}
		})
	}
}

// TestCensusCountsFleet holds the census (what the metrics show) to the escrow report and the
// key listing: the same devices in the same statuses, and the keys by status.
func TestCensusCountsFleet(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	empty, err := e.db.Census(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(empty.Devices) != 4 || len(empty.Keys) != 3 {
		t.Fatalf("census of an empty store leaves statuses out: %+v", empty)
	}
	for st, n := range empty.Devices {
		if n != 0 {
			t.Errorf("empty store: %d devices %s", n, st)
		}
	}

	newListFixture(e)
	e.enroll("LT-NEW", "") // enrolled, never reported: pending
	c, err := e.db.Census(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := e.db.EscrowReport(e.ctx, allScope)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(c.Devices, rep.Counts) {
		t.Errorf("census devices %v, escrow report %v", c.Devices, rep.Counts)
	}
	want := map[escrow.KeyStatus]int{escrow.KeyActive: 0, escrow.KeySuperseded: 0, escrow.KeyPurged: 0}
	for _, k := range e.keys(escrow.KeyFilter{}) {
		want[k.Status]++
	}
	if !maps.Equal(c.Keys, want) {
		t.Errorf("census keys %v, listing %v", c.Keys, want)
	}
	if c.Keys[escrow.KeySuperseded] == 0 || c.Devices[escrow.StatusPending] == 0 {
		t.Errorf("fixture lacks a superseded key or a pending device, so the check above proves little: %+v", c)
	}
}
