package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/agent"
	"github.com/keyward/keyward/internal/agent/agenttest"
	"github.com/keyward/keyward/internal/agent/bitlocker"
	"github.com/keyward/keyward/internal/agent/bitlocker/bitlockersim"
)

// countRequests counts the requests of the proxy's log with this method and path.
func countRequests(p *agenttest.Proxy, method, path string) int {
	n := 0
	for _, q := range p.Requests() {
		if q.Method == method && q.Path == path {
			n++
		}
	}
	return n
}

// A 401 means the device token was revoked: the agent stops, says so clearly, and records it.
func TestTokenRevoked(t *testing.T) {
	srv := agenttest.StartServer(t)
	r := newRig(t, srv, 300)
	r.sampleVolumes()
	r.settle()

	// The server no longer knows the token: as after a revocation, it answers 401.
	path := filepath.Join(r.dir, "state.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	tok := st["deviceToken"].(string)
	st["deviceToken"] = tok[:len(tok)-8] + "AAAAAAAA"
	raw, _ = json.Marshal(st)
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	r.start()
	before := r.proxy.Count()
	err = r.a.Run(context.Background())
	if !errors.Is(err, agent.ErrRevoked) {
		t.Fatalf("Run returned %v, want ErrRevoked", err)
	}
	if n := r.proxy.Count() - before; n != 1 {
		t.Fatalf("%d requests after the 401, want the agent to stop at the first", n)
	}
	if !strings.Contains(r.logs.String(), "refused the device token") {
		t.Fatalf("the log does not say why the agent stopped:\n%s", r.logs.String())
	}
	status, err := agent.ReadStatus(r.dir)
	if err != nil {
		t.Fatal(err)
	}
	if status.TokenRefusedAt.IsZero() {
		t.Fatal("the refusal is not recorded for keyward-agent status")
	}
	r.noMaterialAnywhere()
}

// A 409 to an escrow (the server holds different material for the key ID) is reported as an
// escrowFailed event and not retried in a loop; the fingerprint in the report then shows the
// server its material is wrong, it asks for a re-escrow, and the agent's material replaces it.
func TestEscrowConflict(t *testing.T) {
	srv := agenttest.StartServer(t)
	r := newRig(t, srv, 310)
	pws := agenttest.Passwords(t)
	r.sim.AddVolume(bitlockersim.VolumeSpec{MountPoint: "C:", Type: bitlocker.OperatingSystem,
		ProtectionStatus: bitlocker.ProtectionOn, EncryptionStatus: bitlocker.FullyEncrypted,
		Protectors: []bitlockersim.ProtectorSpec{{Type: bitlocker.TPM}, {Type: bitlocker.RecoveryPassword, Password: pws[0]}}})
	c := r.volume("C:")
	keyID := only(c, bitlocker.RecoveryPassword)[0].KeyID

	// Someone escrowed a different password under the key ID with the device's token first.
	var st struct{ DeviceToken string }
	raw, _ := os.ReadFile(filepath.Join(r.dir, "state.json"))
	json.Unmarshal(raw, &st)
	body := `{"volumeId":` + jsonString(c.ID) + `,"mountPoint":"C:","volumeType":"operatingSystem","kind":"recoveryPassword","recoveryPassword":"` + pws[1] + `"}`
	req, _ := http.NewRequest("PUT", srv.URL+"/api/agent/keys/"+keyID, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+st.DeviceToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("pre-escrow: %v %v", resp, err)
	}
	resp.Body.Close()

	put := "/api/agent/keys/" + keyID
	if err := r.cycle(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := r.cycle(); err != nil {
			t.Fatal(err)
		}
	}
	// One refused PUT, then the re-escrow the server asked for after the mismatch.
	var statuses []int
	for _, q := range r.proxy.Requests() {
		if q.Path == put {
			statuses = append(statuses, q.Status)
		}
	}
	if len(statuses) != 2 || statuses[0] != 409 || statuses[1] != 201 {
		t.Fatalf("escrow answers %v, want one 409 then the re-escrow's 201", statuses)
	}
	if !strings.Contains(r.logs.String(), "refused an escrow") {
		t.Fatalf("the refusal is not logged:\n%s", r.logs.String())
	}
	actions := strings.Join(srv.Audit(r.deviceID), ",")
	if !strings.Contains(actions, "key.escrow") || !strings.Contains(actions, "key.verify") {
		t.Fatalf("audit %s", actions)
	}
	srv.Must(200, "PUT", "/api/settings", map[string]any{"autoRotateOnDisclosure": false}, nil)
	if k := srv.Disclose(r.deviceID, "check")[keyID]; k.RecoveryPassword != pws[0] || k.Verification != "verified" {
		t.Fatalf("after the re-escrow the server holds %+v", k)
	}
	if d := srv.Device(r.deviceID); d.EscrowStatus != "escrowed" {
		t.Fatalf("device %s (%s)", d.EscrowStatus, d.EscrowStatusReason)
	}
	r.noMaterialAnywhere()
}

// A 400 to an escrow (the server finds the request invalid: the agent's bug) is reported as an
// escrowFailed event, marks the device failed, and is tried again only at the next periodic
// report.
func TestEscrowRefused(t *testing.T) {
	srv := agenttest.StartServer(t)
	r := newRig(t, srv, 320)
	r.sim.AddVolume(bitlockersim.VolumeSpec{MountPoint: "C:", Type: bitlocker.OperatingSystem,
		ProtectionStatus: bitlocker.ProtectionOn, EncryptionStatus: bitlocker.FullyEncrypted,
		Protectors: []bitlockersim.ProtectorSpec{{Type: bitlocker.RecoveryPassword, Password: agenttest.Passwords(t)[0]}}})
	keyID := only(r.volume("C:"), bitlocker.RecoveryPassword)[0].KeyID
	put := "/api/agent/keys/" + keyID

	r.proxy.FailRequest(1, agenttest.Fail400)
	for range 3 {
		if err := r.cycle(); err != nil {
			t.Fatal(err)
		}
	}
	if n := countRequests(r.proxy, "PUT", put); n != 1 {
		t.Fatalf("%d escrow attempts in three cycles, want 1 (no retry until the next report)", n)
	}
	if d := srv.Device(r.deviceID); d.EscrowStatus != "failed" || !strings.Contains(d.EscrowStatusReason, "escrow failed") {
		t.Fatalf("device %s (%s), want failed by the escrowFailed event", d.EscrowStatus, d.EscrowStatusReason)
	}

	r.clock.Advance(100 * time.Minute) // past the next periodic report
	if err := r.cycle(); err != nil {
		t.Fatal(err)
	}
	if n := countRequests(r.proxy, "PUT", put); n != 2 {
		t.Fatalf("%d escrow attempts, want a second one at the periodic report", n)
	}
	if d := srv.Device(r.deviceID); d.EscrowStatus != "escrowed" {
		t.Fatalf("device %s (%s), want escrowed once the escrow succeeded", d.EscrowStatus, d.EscrowStatusReason)
	}
}

// A rotation BitLocker refuses ends as failed: the result says so, a rotationFailed event is
// reported, and the old recovery password stays.
func TestRotationFails(t *testing.T) {
	srv := agenttest.StartServer(t)
	tests := []struct {
		name  string
		fault bitlockersim.Fault
		want  []string // in the failure the server shows
	}{
		{"add refused", bitlockersim.Fault{Method: bitlockersim.ProtectKeyWithNumericalPassword, Code: bitlocker.FVE_E_FIPS_PREVENTS_RECOVERY_PASSWORD},
			[]string{"adding a recovery password", "0x80310037 FVE_E_FIPS_PREVENTS_RECOVERY_PASSWORD"}},
		{"new password unreadable", bitlockersim.Fault{Method: bitlockersim.GetKeyProtectorNumericalPassword, Call: 1, Code: bitlocker.E_ACCESSDENIED},
			[]string{"escrowing the new recovery password", "0x80070005 E_ACCESSDENIED"}},
		{"last protector refused", bitlockersim.Fault{Method: bitlockersim.DeleteKeyProtector, Code: bitlocker.FVE_E_KEY_REQUIRED},
			[]string{"removing the old recovery password", "DeleteKeyProtector: 0x8031001D FVE_E_KEY_REQUIRED"}},
		{"auto-unlock key refused", bitlockersim.Fault{Method: bitlockersim.DeleteKeyProtector, Code: bitlocker.FVE_E_VOLUME_BOUND_ALREADY},
			[]string{"removing the old recovery password", "0x8031001F"}},
		{"remove not reaching WMI", bitlockersim.Fault{Method: bitlockersim.DeleteKeyProtector, Err: errors.New("RPC server unavailable")},
			[]string{"removing the old recovery password", "RPC server unavailable"}},
		{"remove answers success but does nothing", bitlockersim.Fault{Method: bitlockersim.DeleteKeyProtector, Ignore: true},
			[]string{"still on the volume"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, srv, uint64(330+i))
			volC, _ := r.sampleVolumes()
			r.settle()
			oldKey := only(r.volume("C:"), bitlocker.RecoveryPassword)[0].KeyID
			r.checkInvariantAlways()
			r.sim.Inject(tt.fault)
			srv.Rotate(r.deviceID, volC)
			r.settle()

			keys := srv.Keys(r.deviceID)
			if keys[oldKey].Status != "active" {
				t.Fatalf("old key %+v, want still active", keys[oldKey])
			}
			if !strings.Contains(strings.Join(srv.Audit(r.deviceID), ","), "key.rotate.fail") {
				t.Fatalf("audit %v", srv.Audit(r.deviceID))
			}
			d := srv.Device(r.deviceID)
			for _, w := range tt.want {
				if d.EscrowStatus != "failed" || !strings.Contains(d.EscrowStatusReason, w) {
					t.Fatalf("device %s (%s), want failed saying %q", d.EscrowStatus, d.EscrowStatusReason, w)
				}
			}
			found := false
			for _, p := range r.volume("C:").Protectors {
				found = found || p.KeyID == oldKey
			}
			if !found {
				t.Fatal("the old recovery password is gone after a failed rotation")
			}
			// Every recovery password left on the volume is one the server holds.
			for _, p := range only(r.volume("C:"), bitlocker.RecoveryPassword) {
				if !r.proxy.Held(p.KeyID, p.Password) {
					t.Fatalf("an unescrowed recovery password %s was left on the volume", p.KeyID)
				}
			}
			r.noMaterialAnywhere()
		})
	}
}

// An unlock with a recovery password recorded in the event log is reported once as
// recoveryUsed, and the server's answer, a rotation, is carried out.
func TestRecoveryUsed(t *testing.T) {
	srv := agenttest.StartServer(t)
	r := newRig(t, srv, 340)
	r.sampleVolumes()
	r.settle()
	oldKey := only(r.volume("C:"), bitlocker.RecoveryPassword)[0].KeyID
	r.sim.AddRecoveryUnlock(bitlocker.RecoveryUnlock{Time: r.clock.Now().Add(time.Minute), EventID: 24652,
		GUIDs: []string{"316A9DD0-5D5D-48FB-A2E8-0A02BB08701C", oldKey}})
	r.clock.Advance(2 * time.Minute)
	r.settle()

	if rps := only(r.volume("C:"), bitlocker.RecoveryPassword); len(rps) != 1 || rps[0].KeyID == oldKey {
		t.Fatalf("C: recovery passwords %v, want the used one rotated", rps)
	}
	if k := srv.Keys(r.deviceID)[oldKey]; k.Status != "superseded" {
		t.Fatalf("the used key is %+v", k)
	}
	n := countActions(srv.Audit(r.deviceID), "key.rotate.request")
	r.settle()
	r.clock.Advance(100 * time.Minute)
	r.settle()
	m := countActions(srv.Audit(r.deviceID), "key.rotate.request")
	if n != 1 || m != 1 {
		t.Fatalf("%d then %d rotation requests, want the unlock reported once", n, m)
	}

	// Automatic unlocking of a data volume uses its external key every day: not a recovery.
	d := r.volume("D:")
	ext := only(d, bitlocker.ExternalKey)[0].KeyID
	r.sim.AddRecoveryUnlock(bitlocker.RecoveryUnlock{Time: r.clock.Now().Add(time.Minute), EventID: bitlocker.EventVolumeUnlocked, GUIDs: []string{ext}})
	r.clock.Advance(2 * time.Minute)
	r.settle()
	if got := countActions(srv.Audit(r.deviceID), "key.rotate.request"); got != 1 {
		t.Fatalf("%d rotation requests after an automatic unlock, want still 1", got)
	}
	// Unlocking it with its recovery password is one.
	rp := only(d, bitlocker.RecoveryPassword)[1].KeyID
	r.sim.AddRecoveryUnlock(bitlocker.RecoveryUnlock{Time: r.clock.Now().Add(time.Minute), EventID: bitlocker.EventVolumeUnlocked, GUIDs: []string{d.ID[11:47], rp}})
	r.clock.Advance(2 * time.Minute)
	r.settle()
	if got := countActions(srv.Audit(r.deviceID), "key.rotate.request"); got != 2 {
		t.Fatalf("%d rotation requests after an unlock of D: with its recovery password, want 2", got)
	}
	if k := srv.Keys(r.deviceID)[rp]; k.Status != "superseded" {
		t.Fatalf("the used recovery password of D: is %+v", k)
	}
}

func countActions(actions []string, action string) int {
	n := 0
	for _, a := range actions {
		if a == action {
			n++
		}
	}
	return n
}

// A locked volume is left out of reports and escrow until it is unlocked; the server keeps its
// keys meanwhile.
func TestLockedVolume(t *testing.T) {
	srv := agenttest.StartServer(t)
	r := newRig(t, srv, 350)
	r.sim.AddVolume(bitlockersim.VolumeSpec{MountPoint: "F:", Type: bitlocker.Removable, Locked: true,
		ProtectionStatus: bitlocker.ProtectionOn, EncryptionStatus: bitlocker.FullyEncrypted,
		Protectors: []bitlockersim.ProtectorSpec{{Type: bitlocker.RecoveryPassword, Password: agenttest.Passwords(t)[3]}}})
	r.settle()
	if n := len(srv.Keys(r.deviceID)); n != 0 {
		t.Fatalf("%d keys escrowed from a locked volume", n)
	}
	for _, op := range r.sim.Log() {
		if op.Method == bitlockersim.GetKeyProtectorNumericalPassword {
			t.Fatalf("material read from a locked volume: %v", op)
		}
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
