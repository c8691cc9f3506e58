package agent_test

import (
	"testing"
	"time"

	"github.com/keyward/keyward/internal/agent/agenttest"
	"github.com/keyward/keyward/internal/agent/bitlocker"
	"github.com/keyward/keyward/internal/agent/bitlocker/bitlockersim"
)

// Escrow before encryption (SPEC §10): with --encrypt-os-volume the agent adds a recovery
// password to the decrypted operating-system volume, escrows it, and starts encryption only
// after the server acknowledged it, whatever fails on the way.
func TestEscrowBeforeEncryption(t *testing.T) {
	srv := agenttest.StartServer(t)
	tests := []struct {
		name string
		// fault is armed before the first cycle; cycles is how many cycles run with it.
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
		{"crash before encrypting", func(r *rig) {
			r.sim.Inject(bitlockersim.Fault{Method: bitlockersim.Encrypt, When: bitlockersim.Before, Crash: true})
		}, 1},
		{"encryption refused by Windows", func(r *rig) {
			r.sim.Inject(bitlockersim.Fault{Method: bitlockersim.Encrypt, Code: bitlocker.FVE_E_BOOTABLE_CDDVD})
		}, 2},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, srv, uint64(100+i))
			r.cfg.EncryptOSVolume = true
			r.start()
			r.sim.AddVolume(bitlockersim.VolumeSpec{MountPoint: "C:", Type: bitlocker.OperatingSystem,
				ProtectionStatus: bitlocker.ProtectionOff, EncryptionStatus: bitlocker.FullyDecrypted})
			r.sim.AddVolume(bitlockersim.VolumeSpec{MountPoint: "E:", Type: bitlocker.FixedData,
				ProtectionStatus: bitlocker.ProtectionOff, EncryptionStatus: bitlocker.FullyDecrypted})
			r.proxy.OnAck(func(keyID string) { r.sim.Note("server acknowledged %s", keyID) })
			r.checkInvariantAlways() // from the first operation: no volume may be encrypted unescrowed
			tt.fault(r)
			for range tt.cycles {
				if err := r.cycle(); err != nil {
					r.start()
				}
			}
			r.proxy.FailAll(agenttest.Pass)
			r.clock.Advance(3 * time.Hour) // a periodic report: a held-back encryption is tried again
			r.settle()

			c := r.volume("C:")
			rps := only(c, bitlocker.RecoveryPassword)
			if len(rps) != 1 || c.EncryptionStatus != bitlocker.EncryptionInProgress || len(only(c, bitlocker.TPM)) != 1 {
				t.Fatalf("C: is %s with protectors %+v, want encrypting with one recovery password and the TPM", c.EncryptionStatus, c.Protectors)
			}
			if e := r.volume("E:"); e.EncryptionStatus != bitlocker.FullyDecrypted || len(e.Protectors) != 0 {
				t.Fatalf("the data volume was touched: %+v", e)
			}
			// Order: the add, the server's acknowledgement, then encryption; one add only.
			var adds, acked, enabled int
			for i, op := range r.sim.Log() {
				switch {
				case op.Method == bitlockersim.ProtectKeyWithNumericalPassword && op.Err == nil:
					adds++
				case op.Note == "server acknowledged "+rps[0].KeyID && acked == 0:
					acked = i
				case op.Method == bitlockersim.Encrypt && op.Err == nil:
					enabled = i
				}
			}
			if adds != 1 || acked == 0 || enabled < acked {
				t.Fatalf("adds %d, acknowledged at %d, encryption at %d:\n%v", adds, acked, enabled, r.sim.Log())
			}
			k := srv.Keys(r.deviceID)[rps[0].KeyID]
			if k.Status != "active" || k.Verification != "verified" {
				t.Fatalf("the server has %+v", k)
			}
			if d := srv.Device(r.deviceID); d.EscrowStatus != "pending" && d.EscrowStatus != "escrowed" {
				t.Fatalf("device %s (%s)", d.EscrowStatus, d.EscrowStatusReason)
			}
			r.noMaterialAnywhere()
		})
	}

	t.Run("never without the flag", func(t *testing.T) {
		r := newRig(t, srv, 199)
		r.sim.AddVolume(bitlockersim.VolumeSpec{MountPoint: "C:", Type: bitlocker.OperatingSystem,
			ProtectionStatus: bitlocker.ProtectionOff, EncryptionStatus: bitlocker.FullyDecrypted})
		r.settle()
		for _, op := range r.sim.Log() {
			if op.Method == bitlockersim.ProtectKeyWithNumericalPassword || op.Method == bitlockersim.Encrypt {
				t.Fatalf("without --encrypt-os-volume the agent did %v", op)
			}
		}
		if d := srv.Device(r.deviceID); d.EscrowStatus != "notAvailable" {
			t.Fatalf("device %s, want notAvailable", d.EscrowStatus)
		}
	})
}
