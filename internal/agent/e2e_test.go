package agent_test

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/agent"
	"github.com/keyward/keyward/internal/agent/agenttest"
	"github.com/keyward/keyward/internal/agent/bitlocker"
	"github.com/keyward/keyward/internal/agent/bitlocker/bitlockersim"
)

// TestEscrowReportRotate is the agent's life in short: enroll, escrow two volumes, report,
// rotate each on request, with the old recovery passwords removed only after the server
// acknowledged the new one.
func TestEscrowReportRotate(t *testing.T) {
	srv := agenttest.StartServer(t)
	r := newRig(t, srv, 1)
	volC, volD := r.sampleVolumes()
	before := r.sim.Snapshot()

	if err := r.cycle(); err != nil {
		t.Fatal(err)
	}
	keys := srv.Keys(r.deviceID)
	if len(keys) != 4 {
		t.Fatalf("the server holds %d keys, want 3 recovery passwords and 1 recovery key: %+v", len(keys), keys)
	}
	for _, v := range before {
		for _, p := range v.Protectors {
			k, ok := keys[p.KeyID]
			switch p.Type {
			case bitlocker.RecoveryPassword:
				if !ok || k.Kind != "recoveryPassword" || k.Status != "active" || k.Verification != "verified" || k.VolumeID != v.ID {
					t.Errorf("recovery password %s on %s: server has %+v", p.KeyID, v.MountPoint, k)
				}
			case bitlocker.ExternalKey:
				if !ok || k.Kind != "recoveryKey" || k.Status != "active" {
					t.Errorf("external key %s: server has %+v", p.KeyID, k)
				}
			default:
				if ok {
					t.Errorf("a %s protector was escrowed", p.Type)
				}
			}
		}
	}
	if d := srv.Device(r.deviceID); d.EscrowStatus != "escrowed" {
		t.Fatalf("device %s (%s), want escrowed", d.EscrowStatus, d.EscrowStatusReason)
	}
	// The recovery key came through intact.
	srv.Must(200, "PUT", "/api/settings", map[string]any{"autoRotateOnDisclosure": false}, nil)
	ext := only(before[1], bitlocker.ExternalKey)[0]
	if got := srv.Disclose(r.deviceID, "check")[ext.KeyID].RecoveryKey; got != bitlocker.FormatRecoveryKey(*ext.ExternalKey) {
		t.Fatalf("recovery key disclosed as %q", got)
	}

	r.proxy.OnAck(func(keyID string) { r.sim.Note("server acknowledged %s", keyID) })
	r.checkInvariantAlways()
	for _, vol := range []struct{ id, mount string }{{volC, "C:"}, {volD, "D:"}} {
		t.Run("rotate "+vol.mount, func(t *testing.T) {
			old := r.volume(vol.mount)
			start := len(r.sim.Log())
			srv.Rotate(r.deviceID, vol.id)
			r.settle()

			now := r.volume(vol.mount)
			rps := only(now, bitlocker.RecoveryPassword)
			if len(rps) != 1 || slices.ContainsFunc(only(old, bitlocker.RecoveryPassword), func(p bitlockersim.ProtectorSpec) bool { return p.KeyID == rps[0].KeyID }) {
				t.Fatalf("after rotation %s has recovery passwords %v, want one new one", vol.mount, rps)
			}
			if !slices.Equal(others(old, bitlocker.RecoveryPassword), others(now, bitlocker.RecoveryPassword)) {
				t.Fatalf("rotation touched other protectors: before %v, after %v", others(old, bitlocker.RecoveryPassword), others(now, bitlocker.RecoveryPassword))
			}
			newID := rps[0].KeyID

			// The order of what happened: add, acknowledgement, then the removals.
			log := r.sim.Log()[start:]
			at := func(match func(bitlockersim.Op) bool) int {
				for i, op := range log {
					if match(op) {
						return i
					}
				}
				t.Fatalf("not in the log:\n%v", log)
				return -1
			}
			added := at(func(op bitlockersim.Op) bool {
				return op.Method == bitlockersim.ProtectKeyWithNumericalPassword && op.Err == nil
			})
			acked := at(func(op bitlockersim.Op) bool { return op.Note == "server acknowledged "+newID })
			if !(added < acked) {
				t.Fatalf("acknowledged before it was added:\n%v", log)
			}
			for _, p := range only(old, bitlocker.RecoveryPassword) {
				removed := at(func(op bitlockersim.Op) bool {
					return op.Method == bitlockersim.DeleteKeyProtector && op.KeyID == p.KeyID && op.Err == nil
				})
				if !(acked < removed) {
					t.Fatalf("old protector %s removed before the server acknowledged %s:\n%v", p.KeyID, newID, log)
				}
			}
			for _, op := range log {
				if op.Method == bitlockersim.DeleteKeyProtector && op.KeyID == newID {
					t.Fatalf("the new protector was removed:\n%v", log)
				}
			}

			keys := srv.Keys(r.deviceID)
			for _, p := range only(old, bitlocker.RecoveryPassword) {
				if keys[p.KeyID].Status != "superseded" {
					t.Errorf("old key %s is %q, want superseded", p.KeyID, keys[p.KeyID].Status)
				}
			}
			if k := keys[newID]; k.Status != "active" || k.Verification != "verified" || k.VolumeID != vol.id {
				t.Errorf("new key %+v, want active and verified", k)
			}
			if d := srv.Device(r.deviceID); d.EscrowStatus != "escrowed" {
				t.Fatalf("device %s (%s), want escrowed", d.EscrowStatus, d.EscrowStatusReason)
			}
			actions := strings.Join(srv.Audit(r.deviceID), ",")
			if !strings.Contains(actions, "key.rotate.request,key.rotate.deliver") || !strings.Contains(actions, "key.rotate.complete") {
				t.Fatalf("audit trail %s", actions)
			}
			r.checkInvariantOnServer()
		})
	}

	st, err := agent.ReadStatus(r.dir)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := st.Write(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{r.deviceID, r.proxy.URL, "C:", "D:", "escrowed", "Pending work:\n  none"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status does not show %q:\n%s", want, out.String())
		}
	}
	r.noMaterial("the status", out.Bytes(), true)
	r.noMaterialAnywhere()
	if r.crashes != 0 {
		t.Fatalf("%d crashes in a run without faults", r.crashes)
	}
}

// keyward-agent status shows a rotation cut short, and what is not escrowed yet.
func TestStatusShowsPendingWork(t *testing.T) {
	srv := agenttest.StartServer(t)
	r := newRig(t, srv, 700)
	volC, _ := r.sampleVolumes()
	r.settle()
	srv.Rotate(r.deviceID, volC)
	r.proxy.FailRequest(2, agenttest.Fail503) // the commands come, the escrow of the new key fails
	if err := r.cycle(); err == nil {
		t.Fatal("the cycle succeeded with the escrow failing")
	}
	st, err := agent.ReadStatus(r.dir)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := st.Write(&out); err != nil {
		t.Fatal(err)
	}
	if st.Rotation == nil || !strings.Contains(out.String(), "next step escrow, replacing "+st.Rotation.OldKeyID+", new key "+st.Rotation.NewKeyID) {
		t.Fatalf("status:\n%s", out.String())
	}
	r.noMaterial("the status", out.Bytes(), true)
	r.settle()
	if st, _ := agent.ReadStatus(r.dir); len(st.Pending()) != 0 {
		t.Fatalf("pending after settling: %v", st.Pending())
	}
}
