package agent_test

import (
	"fmt"
	"testing"

	"github.com/keyward/keyward/internal/agent"
	"github.com/keyward/keyward/internal/agent/agenttest"
	"github.com/keyward/keyward/internal/agent/bitlocker"
	"github.com/keyward/keyward/internal/agent/bitlocker/bitlockersim"
)

// A rotation must survive the agent dying at any point, and the server or the network failing
// any request: after a restart the agent finishes the rotation or rolls it forward, and at no
// moment is an encrypted volume without a recovery password the server holds. The invariant is
// checked after every simulated BitLocker operation, against the escrows the proxy saw the
// server acknowledge, and at the end of each case through the API.

// rotationCase prepares a device whose volumes are escrowed, arms a fault through arm, asks
// for the rotation of C: and runs the agent until it settles, restarting it after every crash
// or failure. It checks the outcome and returns the rig.
func rotationCase(t *testing.T, srv *agenttest.Server, seed uint64, arm func(r *rig)) *rig {
	r := newRig(t, srv, seed)
	volC, _ := r.sampleVolumes()
	if err := r.cycle(); err != nil {
		t.Fatal(err)
	}
	old := r.volume("C:")
	oldKey := only(old, bitlocker.RecoveryPassword)[0].KeyID
	r.checkInvariantAlways()
	r.armedOps, r.armedRequests = r.changeOps(), r.proxy.Count()
	arm(r)
	srv.Rotate(r.deviceID, volC)
	r.settle()
	r.settledOps, r.settledRequests = r.changeOps(), r.proxy.Count()
	r.sim.ClearFaults()
	r.crash.Disarm()
	r.settle()

	now := r.volume("C:")
	rps := only(now, bitlocker.RecoveryPassword)
	if len(rps) != 1 || rps[0].KeyID == oldKey {
		t.Fatalf("C: has recovery passwords %v, want one new one\nrequests: %v\nlog: %v", rps, r.proxy.Requests(), r.sim.Log())
	}
	if fmt.Sprint(others(old, bitlocker.RecoveryPassword)) != fmt.Sprint(others(now, bitlocker.RecoveryPassword)) {
		t.Fatalf("other protectors changed: %v -> %v", others(old, bitlocker.RecoveryPassword), others(now, bitlocker.RecoveryPassword))
	}
	keys := srv.Keys(r.deviceID)
	if keys[oldKey].Status != "superseded" {
		t.Fatalf("old key %+v, want superseded", keys[oldKey])
	}
	if k := keys[rps[0].KeyID]; k.Status != "active" || k.Verification != "verified" {
		t.Fatalf("new key %+v, want active and verified", k)
	}
	if d := srv.Device(r.deviceID); d.EscrowStatus != "escrowed" {
		t.Fatalf("device %s (%s), want escrowed", d.EscrowStatus, d.EscrowStatusReason)
	}
	st, err := agent.ReadStatus(r.dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Pending()) != 0 {
		t.Fatalf("pending work left: %v", st.Pending())
	}
	r.checkInvariantOnServer()
	r.noMaterialAnywhere()
	return r
}

// baseline measures a rotation without faults: how many simulator operations and requests it
// takes until the agent settles, so the fault cases cover each of them.
func baseline(t *testing.T, srv *agenttest.Server) (ops, requests int) {
	r := rotationCase(t, srv, 1000, func(*rig) {})
	ops, requests = r.settledOps-r.armedOps, r.settledRequests-r.armedRequests
	if ops < 2 || requests < 3 {
		t.Fatalf("the baseline rotation took %d operations and %d requests", ops, requests)
	}
	return ops, requests
}

func TestRotationSurvivesCrashes(t *testing.T) {
	srv := agenttest.StartServer(t)
	srv.Must(200, "PUT", "/api/settings", map[string]any{"autoRotateOnDisclosure": false}, nil)
	ops, requests := baseline(t, srv)
	seed := uint64(1)
	for n := 1; n <= ops+1; n++ {
		for _, when := range []bitlockersim.When{bitlockersim.Before, bitlockersim.After} {
			seed++
			seed := seed
			t.Run(fmt.Sprintf("BitLocker operation %d %s", n, when), func(t *testing.T) {
				t.Parallel()
				r := rotationCase(t, srv, seed, func(r *rig) {
					r.sim.Inject(bitlockersim.Fault{Call: n, When: when, Crash: true})
				})
				if n <= ops && r.crashes == 0 {
					t.Fatalf("operation %d never crashed", n)
				}
			})
		}
	}
	for n := 1; n <= requests+1; n++ {
		for _, after := range []bool{false, true} {
			seed++
			seed := seed
			t.Run(fmt.Sprintf("request %d after=%v", n, after), func(t *testing.T) {
				t.Parallel()
				r := rotationCase(t, srv, seed, func(r *rig) { r.crash.Arm("", "", n, after) })
				if n <= requests && r.crashes == 0 {
					t.Fatalf("request %d never crashed", n)
				}
			})
		}
	}
	// The named steps of SPEC §4, each crashed before and after.
	steps := []struct {
		name string
		arm  func(r *rig, after bool)
	}{
		{"add", func(r *rig, after bool) {
			r.sim.Inject(bitlockersim.Fault{Method: bitlockersim.ProtectKeyWithNumericalPassword, When: when(after), Crash: true})
		}},
		{"escrow PUT", func(r *rig, after bool) { r.crash.Arm("PUT", "/api/agent/keys/", 1, after) }},
		{"remove", func(r *rig, after bool) {
			r.sim.Inject(bitlockersim.Fault{Method: bitlockersim.DeleteKeyProtector, When: when(after), Crash: true})
		}},
		{"result POST", func(r *rig, after bool) { r.crash.Arm("POST", "/api/agent/commands/", 1, after) }},
	}
	for _, s := range steps {
		for _, after := range []bool{false, true} {
			seed++
			seed := seed
			t.Run(fmt.Sprintf("%s %s", when(after), s.name), func(t *testing.T) {
				t.Parallel()
				r := rotationCase(t, srv, seed, func(r *rig) { s.arm(r, after) })
				if r.crashes != 1 {
					t.Fatalf("%d crashes, want 1", r.crashes)
				}
			})
		}
	}
}

func when(after bool) bitlockersim.When {
	if after {
		return bitlockersim.After
	}
	return bitlockersim.Before
}

func TestRotationSurvivesServerFailures(t *testing.T) {
	srv := agenttest.StartServer(t)
	srv.Must(200, "PUT", "/api/settings", map[string]any{"autoRotateOnDisclosure": false}, nil)
	_, requests := baseline(t, srv)
	seed := uint64(5000)
	for n := 1; n <= requests+1; n++ {
		for _, f := range []agenttest.Failure{agenttest.Fail503, agenttest.DropBefore, agenttest.DropAfter} {
			seed++
			seed := seed
			t.Run(fmt.Sprintf("request %d %s", n, f), func(t *testing.T) {
				t.Parallel()
				r := rotationCase(t, srv, seed, func(r *rig) { r.proxy.FailRequest(n, f) })
				failed := false
				for _, q := range r.proxy.Requests() {
					failed = failed || q.Failure == f
				}
				if n <= requests && !failed {
					t.Fatalf("request %d was never failed", n)
				}
			})
		}
	}
}
