package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/agent"
	"github.com/keyward/keyward/internal/agent/agenttest"
	"github.com/keyward/keyward/internal/agent/bitlocker"
	"github.com/keyward/keyward/internal/agent/bitlocker/bitlockersim"
)

// waitingVolume adds an operating-system volume in Device Encryption's "waiting for
// activation" state: encrypted with a clear key, protection off, no protector.
func waitingVolume(r *rig) string {
	return r.sim.AddVolume(bitlockersim.VolumeSpec{MountPoint: "C:", Type: bitlocker.OperatingSystem,
		ProtectionStatus: bitlocker.ProtectionOff, EncryptionStatus: bitlocker.FullyEncrypted})
}

// Device Encryption waiting for activation: the agent adds a recovery password, escrows it, and
// only after the server's acknowledgement adds the TPM protector and turns protection on,
// whatever fails on the way.
func TestDeviceEncryptionActivation(t *testing.T) {
	srv := agenttest.StartServer(t)
	tests := []struct {
		name   string
		fault  func(r *rig)
		cycles int
	}{
		{"no fault", func(*rig) {}, 1},
		{"server down until it recovers", func(r *rig) { r.proxy.FailAll(agenttest.Fail503) }, 3},
		{"escrow answer lost", func(r *rig) { r.proxy.FailRequest(1, agenttest.DropAfter) }, 1},
		{"crash after the add", func(r *rig) {
			r.sim.Inject(bitlockersim.Fault{Method: bitlockersim.ProtectKeyWithNumericalPassword, When: bitlockersim.After, Crash: true})
		}, 1},
		{"crash after the escrow", func(r *rig) { r.crash.Arm("PUT", "/api/agent/keys/", 1, true) }, 1},
		{"crash after the TPM protector", func(r *rig) {
			r.sim.Inject(bitlockersim.Fault{Method: bitlockersim.ProtectKeyWithTPM, When: bitlockersim.After, Crash: true})
		}, 1},
		{"crash before protection comes on", func(r *rig) {
			r.sim.Inject(bitlockersim.Fault{Method: bitlockersim.EnableKeyProtectors, Crash: true})
		}, 1},
		{"TPM protector refused", func(r *rig) {
			r.sim.Inject(bitlockersim.Fault{Method: bitlockersim.ProtectKeyWithTPM, Code: bitlocker.TPM_E_DEACTIVATED})
		}, 2},
		{"no TPM until one is ready", func(r *rig) { r.sim.SetTPMReady(false) }, 2},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, srv, uint64(400+i))
			r.cfg.ActivateDeviceEncryption = true
			r.start()
			waitingVolume(r)
			r.proxy.OnAck(func(keyID string) { r.sim.Note("server acknowledged %s", keyID) })
			r.checkInvariantAlways()
			tt.fault(r)
			for range tt.cycles {
				if err := r.cycle(); err != nil {
					r.start()
				}
			}
			if tt.name == "no TPM until one is ready" {
				// Held back: the recovery password is escrowed, protection stays off, and the
				// server is told why.
				c := r.volume("C:")
				if c.ProtectionStatus != bitlocker.ProtectionOff || len(only(c, bitlocker.TPM)) != 0 || len(only(c, bitlocker.RecoveryPassword)) != 1 {
					t.Fatalf("without a TPM: %+v", c)
				}
				if k := srv.Keys(r.deviceID)[only(c, bitlocker.RecoveryPassword)[0].KeyID]; k.Status != "active" {
					t.Fatalf("the recovery password is not escrowed: %+v", k)
				}
				if d := srv.Device(r.deviceID); !strings.Contains(d.EscrowStatusReason, "no ready TPM") {
					t.Fatalf("the server is not told: %s (%s)", d.EscrowStatus, d.EscrowStatusReason)
				}
				if st, _ := agent.ReadStatus(r.dir); st.Rotation != nil {
					t.Fatal("a rotation appeared")
				}
				r.sim.SetTPMReady(true)
			}
			r.proxy.FailAll(agenttest.Pass)
			r.clock.Advance(3 * time.Hour) // a periodic report: a held-back activation is tried again
			r.settle()

			c := r.volume("C:")
			rps := only(c, bitlocker.RecoveryPassword)
			if len(rps) != 1 || len(only(c, bitlocker.TPM)) != 1 || c.ProtectionStatus != bitlocker.ProtectionOn || c.EncryptionStatus != bitlocker.FullyEncrypted {
				t.Fatalf("C: is %s/%s with protectors %+v, want protected by one recovery password and the TPM", c.ProtectionStatus, c.EncryptionStatus, c.Protectors)
			}
			// Order: the add, the server's acknowledgement, then the TPM protector and protection.
			var adds, acked, tpm, enabled int
			for i, op := range r.sim.Log() {
				switch {
				case op.Method == bitlockersim.ProtectKeyWithNumericalPassword && op.Err == nil:
					adds++
				case op.Note == "server acknowledged "+rps[0].KeyID && acked == 0:
					acked = i
				case op.Method == bitlockersim.ProtectKeyWithTPM && op.Err == nil && tpm == 0:
					tpm = i
				case op.Method == bitlockersim.EnableKeyProtectors && op.Err == nil:
					enabled = i
				}
			}
			if adds != 1 || acked == 0 || tpm < acked || enabled < tpm {
				t.Fatalf("adds %d, acknowledged at %d, TPM protector at %d, protection on at %d:\n%v", adds, acked, tpm, enabled, r.sim.Log())
			}
			k := srv.Keys(r.deviceID)[rps[0].KeyID]
			if k.Status != "active" || k.Verification != "verified" {
				t.Fatalf("the server has %+v", k)
			}
			if d := srv.Device(r.deviceID); d.EscrowStatus != "escrowed" {
				t.Fatalf("device %s (%s), want escrowed", d.EscrowStatus, d.EscrowStatusReason)
			}
			r.noMaterialAnywhere()
		})
	}

	t.Run("never without the flag", func(t *testing.T) {
		r := newRig(t, srv, 499)
		waitingVolume(r)
		r.settle()
		for _, op := range r.sim.Log() {
			if op.Method.Changes() {
				t.Fatalf("without --activate-device-encryption the agent did %v", op)
			}
		}
	})
}

// What the agent cannot do it says: Windows Home cannot turn BitLocker on, and without a ready
// TPM the operating-system volume is not encrypted. Nothing is changed on the volume, and the
// server is told why.
func TestEncryptionNotPossible(t *testing.T) {
	srv := agenttest.StartServer(t)
	for i, tt := range []struct {
		name, edition string
		tpm           bool
		want          string
	}{
		{"Home edition", "Core", true, "Windows Home edition"},
		{"no TPM", "Professional", false, "no ready TPM"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, srv, uint64(480+i))
			r.cfg.EncryptOSVolume, r.cfg.Edition = true, tt.edition
			r.start()
			r.sim.SetTPMReady(tt.tpm)
			r.sim.AddVolume(bitlockersim.VolumeSpec{MountPoint: "C:", Type: bitlocker.OperatingSystem,
				ProtectionStatus: bitlocker.ProtectionOff, EncryptionStatus: bitlocker.FullyDecrypted})
			r.settle()
			for _, op := range r.sim.Log() {
				if op.Method.Changes() {
					t.Fatalf("the agent did %v", op)
				}
			}
			// The server shows the device as without BitLocker; the audit trail says why.
			if d := strings.Join(srv.AuditDetails(r.deviceID), "\n"); !strings.Contains(d, tt.want) {
				t.Fatalf("the audit trail does not say %q:\n%s", tt.want, d)
			}
		})
	}
}

// A fixed data drive that is locked, and whose protector list Windows will not give while it
// is, is reported locked (SPEC §7): a server that knows lockStatus then keeps its keys, and one
// from before lockStatus is sent the report without the volume, which keeps its keys too.
func TestLockedDataDrive(t *testing.T) {
	srv := agenttest.StartServer(t)
	for i, aware := range []bool{true, false} {
		name := map[bool]string{true: "server knows lockStatus", false: "server before lockStatus"}[aware]
		t.Run(name, func(t *testing.T) {
			r := newRig(t, srv, uint64(360+i))
			r.proxy.LockAware(aware)
			r.sim.AddVolume(bitlockersim.VolumeSpec{MountPoint: "C:", Type: bitlocker.OperatingSystem,
				ProtectionStatus: bitlocker.ProtectionOn, EncryptionStatus: bitlocker.FullyEncrypted,
				Protectors: []bitlockersim.ProtectorSpec{{Type: bitlocker.TPM}, {Type: bitlocker.RecoveryPassword, Password: agenttest.Passwords(t)[0]}}})
			r.sim.AddVolume(bitlockersim.VolumeSpec{MountPoint: "D:", Type: bitlocker.FixedData, ProtectorsHidden: true,
				ProtectionStatus: bitlocker.ProtectionOn, EncryptionStatus: bitlocker.FullyEncrypted,
				Protectors: []bitlockersim.ProtectorSpec{{Type: bitlocker.RecoveryPassword, Password: agenttest.Passwords(t)[1]}}})
			r.settle()
			dKey := only(r.volume("D:"), bitlocker.RecoveryPassword)[0].KeyID
			if v := lastReported(t, r.proxy, 0, "D:", true); aware && v["lockStatus"] != "unlocked" || !aware && v["lockStatus"] != nil {
				t.Fatalf("unlocked D: reported as %v", v)
			}
			if !aware {
				// The first report carried lockStatus; the server refused the field, and the
				// report went again without it.
				q := r.proxy.Requests()
				i := slices.IndexFunc(q, func(q agenttest.Request) bool { return q.Body != nil })
				if i < 0 || q[i].Status != 400 || !strings.Contains(string(q[i].Body), `"lockStatus":"unlocked"`) || q[i+1].Body == nil || q[i+1].Status != 200 {
					t.Fatalf("requests %v", q)
				}
			}
			lockedAt := len(r.sim.Log())

			r.sim.SetLocked("D:", true)
			before := len(r.proxy.Requests())
			r.clock.Advance(3 * time.Hour)
			r.settle()
			sent := lastReported(t, r.proxy, before, "D:", aware)
			switch {
			case aware && (sent["lockStatus"] != "locked" || sent["protectionStatus"] != "on" || len(sent["keyProtectors"].([]any)) != 0):
				t.Fatalf("locked D: reported as %v", sent)
			case !aware && sent != nil:
				t.Fatalf("a server before lockStatus was sent the locked volume: %v", sent)
			}
			if k := srv.Keys(r.deviceID)[dKey]; k.Status != "active" {
				t.Fatalf("the locked drive's key is %+v", k)
			}
			r.clock.Advance(8 * 24 * time.Hour)
			r.settle()
			if k := srv.Keys(r.deviceID)[dKey]; k.Status != "active" {
				t.Fatalf("after a week of reports the locked drive's key is %+v", k)
			}
			for _, op := range r.sim.Log()[lockedAt:] {
				if op.Method == bitlockersim.GetKeyProtectorNumericalPassword && op.MountPoint == "D:" {
					t.Fatalf("material read from the locked drive: %v", op)
				}
			}
			st, err := agent.ReadStatus(r.dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range st.Volumes {
				if v.MountPoint == "D:" && v.LockStatus != "locked" {
					t.Fatalf("status shows D: as %+v", v)
				}
			}
			// What the agent acknowledged for the drive is kept while it hides its protectors, and
			// nothing is escrowed again once it is unlocked.
			if !slices.Contains(st.Acknowledged, dKey) {
				t.Fatalf("the locked drive's acknowledgement was forgotten: %v", st.Acknowledged)
			}
			puts := countRequests(r.proxy, "PUT", "/api/agent/keys/"+dKey)
			r.sim.SetLocked("D:", false)
			r.clock.Advance(3 * time.Hour)
			r.settle()
			if n := countRequests(r.proxy, "PUT", "/api/agent/keys/"+dKey); n != puts {
				t.Fatalf("the unlocked drive's key was escrowed again (%d PUTs, were %d)", n, puts)
			}
			if !aware && !strings.Contains(r.logs.String(), "does not know lockStatus") {
				t.Fatal("the fallback for a server before lockStatus is not logged")
			}
			r.noMaterialAnywhere()
		})
	}
}

// lastReported returns the volume at mountPoint in the last report sent since request number
// from (or the first one when want is false and none may be there: nil).
func lastReported(t *testing.T, p *agenttest.Proxy, from int, mountPoint string, want bool) map[string]any {
	t.Helper()
	var found map[string]any
	for _, q := range p.Requests()[from:] {
		var rep struct{ Volumes []map[string]any }
		if q.Body == nil || q.Status != 200 || json.Unmarshal(q.Body, &rep) != nil {
			continue
		}
		found = nil
		for _, v := range rep.Volumes {
			if v["mountPoint"] == mountPoint {
				found = v
			}
		}
	}
	if want && found == nil {
		t.Fatalf("no accepted report since request %d lists %s", from, mountPoint)
	}
	return found
}

// Recovery is found by position in the event log, not by time: an unlock written while the
// clock was set back (a CMOS reset) is reported, and so is one after the clock ran ahead.
func TestRecoveryUsedAfterClockReset(t *testing.T) {
	srv := agenttest.StartServer(t)
	r := newRig(t, srv, 370)
	r.sampleVolumes()
	r.settle()
	oldKey := only(r.volume("C:"), bitlocker.RecoveryPassword)[0].KeyID
	r.sim.AddRecoveryUnlock(bitlocker.RecoveryUnlock{Time: time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC), EventID: bitlocker.EventBootRecoveryPassword, GUIDs: []string{oldKey}})
	r.clock.Advance(2 * time.Minute)
	r.settle()
	if n := countActions(srv.Audit(r.deviceID), "key.rotate.request"); n != 1 {
		t.Fatalf("%d rotation requests after an unlock dated 2001, want 1", n)
	}
	// The device's clock jumps a year ahead, then the next unlock is written with the right time.
	r.clock.Advance(365 * 24 * time.Hour)
	r.settle()
	newKey := only(r.volume("C:"), bitlocker.RecoveryPassword)[0].KeyID
	r.sim.AddRecoveryUnlock(bitlocker.RecoveryUnlock{Time: time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC), EventID: bitlocker.EventUnlockedInWinRE, GUIDs: []string{newKey}})
	r.settle()
	if n := countActions(srv.Audit(r.deviceID), "key.rotate.request"); n != 2 {
		t.Fatalf("%d rotation requests, want the WinRE unlock (805) reported too", n)
	}
	r.clock.Advance(2 * time.Hour)
	r.settle()
	if n := countActions(srv.Audit(r.deviceID), "key.rotate.request"); n != 2 {
		t.Fatalf("%d rotation requests, want each unlock reported once", n)
	}
}

// fakeDir answers for a directory that exists with the given description.
type fakeDir struct {
	info    agent.DirInfo
	secured bool
}

func (f *fakeDir) Create(string) error                   { return fs.ErrExist }
func (f *fakeDir) Inspect(string) (agent.DirInfo, error) { return f.info, nil }
func (f *fakeDir) Secure(string) error                   { f.secured = true; return nil }

// A state directory someone made before the agent is refused unless it belongs to
// Administrators or SYSTEM (this user or root on Unix) and is no link: its owner could change
// its access list and the state in it.
func TestStateDirRefused(t *testing.T) {
	for _, tt := range []struct {
		name   string
		info   agent.DirInfo
		refuse string
	}{
		{"owned by a user", agent.DirInfo{Owner: "S-1-5-21-1-2-3-1001"}, "owned by S-1-5-21-1-2-3-1001"},
		{"a junction", agent.DirInfo{Reparse: true, OwnerTrusted: true}, "reparse point"},
		{"owned by Administrators", agent.DirInfo{Owner: "S-1-5-32-544", OwnerTrusted: true}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeDir{info: tt.info}
			err := agent.PrepareStateDirWith(f, filepath.Join(t.TempDir(), "Keyward"))
			if tt.refuse == "" {
				if err != nil || !f.secured {
					t.Fatalf("a trusted directory: %v, secured %v", err, f.secured)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.refuse) || f.secured {
				t.Fatalf("error %v, secured %v; want a refusal saying %q", err, f.secured, tt.refuse)
			}
		})
	}

	// The real thing on this system: a symbolic link where the state directory should be.
	srv := agenttest.StartServer(t)
	target := t.TempDir()
	link := filepath.Join(t.TempDir(), "Keyward")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	_, err := agent.Enroll(context.Background(), agent.EnrollOptions{StateDir: link, ServerURL: srv.URL, Token: srv.EnrollToken,
		Info: agent.DeviceInfo{Hostname: "LT-LINK"}})
	if err == nil || !strings.Contains(err.Error(), "reparse point") {
		t.Fatalf("enrolling into a symbolic link: %v", err)
	}
	if entries, _ := os.ReadDir(target); len(entries) != 0 {
		t.Fatalf("the link's target was written to: %v", entries)
	}
	// A new directory is created private.
	dir := filepath.Join(t.TempDir(), "Keyward")
	if err := agent.PrepareStateDirWith(nil, ""); err == nil {
		t.Fatal("an empty state directory was accepted")
	}
	if _, err := agent.Enroll(context.Background(), agent.EnrollOptions{StateDir: dir, ServerURL: srv.URL, Token: srv.EnrollToken,
		Info: agent.DeviceInfo{Hostname: "LT-NEW"}}); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("a new state directory: %v, %v", fi, err)
	}
}
