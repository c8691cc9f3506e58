package agent_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
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
	"github.com/keyward/keyward/internal/testkit"
)

// The tests of this package run the agent against a real keyward server (a process built from
// this checkout), through a proxy that can fail requests, with BitLocker simulated: the only
// fakes are the operating system's edge and the clock.

func TestMain(m *testing.M) { agenttest.Main(m) }

// rig is one enrolled device: its simulated BitLocker, its state directory, the proxy between
// it and the server, and the agent currently running on them.
type rig struct {
	t        testing.TB
	srv      *agenttest.Server
	proxy    *agenttest.Proxy
	crash    *agenttest.CrashTransport
	sim      *bitlockersim.Sim
	dir      string
	logs     *testkit.Buffer
	clock    *testkit.Clock
	cfg      agent.Config
	a        *agent.Agent
	deviceID string
	crashes  int
	// Where a fault case armed its fault and where the agent first settled after it: counts of
	// simulator operations that change a volume and of requests.
	armedOps, armedRequests, settledOps, settledRequests int
}

// newRig enrolls a new device with the server. The simulated BitLocker gets its GUIDs from seed.
func newRig(t testing.TB, srv *agenttest.Server, seed uint64) *rig {
	t.Helper()
	r := &rig{
		t: t, srv: srv, proxy: agenttest.NewProxy(t, srv.URL),
		crash: &agenttest.CrashTransport{Base: http.DefaultTransport.(*http.Transport).Clone()},
		sim:   bitlockersim.New(seed), dir: t.TempDir(), logs: &testkit.Buffer{},
		clock: testkit.NewClock(time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)),
	}
	// Reports reach the server as one that knows lockStatus (SPEC §7) takes them.
	r.proxy.LockAware(true)
	id, err := agent.Enroll(context.Background(), agent.EnrollOptions{
		StateDir: r.dir, ServerURL: r.proxy.URL, Token: srv.EnrollToken, OwnerUPN: "alice@example.com",
		Info:      agent.DeviceInfo{Hostname: fmt.Sprintf("LT-%04d", seed), SerialNumber: "SN-TEST", OSVersion: "10.0.26100"},
		Transport: r.crash, Version: "test", Now: r.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.deviceID = id
	r.cfg = agent.Config{
		StateDir: r.dir, BitLocker: r.sim.System(), Version: "test", Transport: r.crash,
		Logger: slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:    r.clock.Now,
		Sleep:  func(ctx context.Context, d time.Duration) error { r.clock.Advance(d); return ctx.Err() },
	}
	r.start()
	t.Cleanup(func() {
		if r.a != nil {
			r.a.Close()
		}
	})
	return r
}

// start starts a new agent on the rig's state directory, as a restarted process would.
func (r *rig) start() {
	r.t.Helper()
	if r.a != nil {
		r.a.Close() // the process is gone: the system releases its lock
	}
	a, err := agent.New(r.cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	r.a = a
}

// cycle runs one cycle of the agent. A crash injected into the simulator or the transport
// ends the agent like a killed process, and a new one starts on the same state directory.
func (r *rig) cycle() (err error) {
	defer func() {
		v := recover()
		switch v.(type) {
		case nil:
			return
		case bitlockersim.Crash, agenttest.HTTPCrash:
			r.crashes++
			err = fmt.Errorf("%v", v)
			r.start()
		default:
			panic(v)
		}
	}()
	return r.a.Cycle(context.Background())
}

// settle runs cycles, restarting the agent after every failure as the service manager would,
// until two cycles in a row succeed with no rotation under way.
func (r *rig) settle() {
	r.t.Helper()
	clean := 0
	for range 20 {
		if err := r.cycle(); err != nil {
			clean = 0
			r.start()
			continue
		}
		st, err := agent.ReadStatus(r.dir)
		if err != nil {
			r.t.Fatal(err)
		}
		if st.Rotation != nil {
			clean = 0
			continue
		}
		if clean++; clean == 2 {
			return
		}
	}
	r.t.Fatalf("the agent did not settle; requests:\n%v\nlog:\n%s", r.proxy.Requests(), r.logs.String())
}

// volume returns a simulated volume by mount point.
func (r *rig) volume(mountPoint string) bitlockersim.VolumeSpec {
	r.t.Helper()
	for _, v := range r.sim.Snapshot() {
		if v.MountPoint == mountPoint {
			return v
		}
	}
	r.t.Fatalf("no volume %s", mountPoint)
	return bitlockersim.VolumeSpec{}
}

// checkInvariantAlways checks after every simulated BitLocker operation, from now on, that every
// encrypted volume has a recovery password the server holds.
func (r *rig) checkInvariantAlways() {
	r.sim.AfterEach(func(op bitlockersim.Op) {
		if err := r.sim.CheckEscrowed(r.proxy.Held); err != nil {
			r.t.Errorf("after %v: %v", op, err)
		}
	})
}

// checkInvariantOnServer checks through the API that every encrypted volume's recovery
// passwords include one the server discloses. The view is audited (reason "invariant").
func (r *rig) checkInvariantOnServer() {
	r.t.Helper()
	held := r.srv.Disclose(r.deviceID, "invariant")
	err := r.sim.CheckEscrowed(func(keyID, pw string) bool {
		k, ok := held[keyID]
		return ok && k.Status == "active" && k.RecoveryPassword == pw
	})
	if err != nil {
		r.t.Fatal(err)
	}
}

// noMaterial fails if b holds any key material the simulator ever held (recovery passwords
// with and without hyphens, external keys in hex), or the device's token or verification key
// when secrets is set.
func (r *rig) noMaterial(what string, b []byte, secrets bool) {
	r.t.Helper()
	var needles []string
	for _, pw := range r.sim.Passwords() {
		needles = append(needles, pw, strings.ReplaceAll(pw, "-", ""))
	}
	for _, v := range r.sim.Snapshot() {
		for _, p := range v.Protectors {
			if p.ExternalKey != nil {
				needles = append(needles, hex.EncodeToString(p.ExternalKey[:]), strings.ToUpper(hex.EncodeToString(p.ExternalKey[:])))
			}
		}
	}
	if secrets {
		var st struct{ DeviceToken, VerificationKey string }
		raw, err := os.ReadFile(filepath.Join(r.dir, "state.json"))
		if err != nil {
			r.t.Fatal(err)
		}
		if err := json.Unmarshal(raw, &st); err != nil {
			r.t.Fatal(err)
		}
		_, secret, _ := strings.Cut(st.DeviceToken[4:], "_")
		needles = append(needles, st.DeviceToken, secret, st.VerificationKey)
	}
	for _, n := range needles {
		if n != "" && bytes.Contains(b, []byte(n)) {
			r.t.Fatalf("%s holds key material or a device secret", what)
		}
	}
}

// noMaterialAnywhere checks the state file and the log.
func (r *rig) noMaterialAnywhere() {
	r.t.Helper()
	raw, err := os.ReadFile(filepath.Join(r.dir, "state.json"))
	if err != nil {
		r.t.Fatal(err)
	}
	r.noMaterial("the state file", raw, false)
	r.noMaterial("the log", []byte(r.logs.String()), true)
}

// sampleVolumes creates the usual device: C: (operating system: TPM+PIN and one recovery
// password) and D: (data: two recovery passwords, a password, and an external key for
// automatic unlock), both encrypted, with the real recovery passwords of sample images.
func (r *rig) sampleVolumes() (c, d string) {
	pws := agenttest.Passwords(r.t)
	ext := [32]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}
	c = r.sim.AddVolume(bitlockersim.VolumeSpec{MountPoint: "C:", Type: bitlocker.OperatingSystem,
		ProtectionStatus: bitlocker.ProtectionOn, EncryptionStatus: bitlocker.FullyEncrypted,
		Protectors: []bitlockersim.ProtectorSpec{{Type: bitlocker.TPMPin}, {Type: bitlocker.RecoveryPassword, Password: pws[0]}}})
	d = r.sim.AddVolume(bitlockersim.VolumeSpec{MountPoint: "D:", Type: bitlocker.FixedData,
		ProtectionStatus: bitlocker.ProtectionOn, EncryptionStatus: bitlocker.FullyEncrypted,
		Protectors: []bitlockersim.ProtectorSpec{{Type: bitlocker.RecoveryPassword, Password: pws[1]},
			{Type: bitlocker.RecoveryPassword, Password: pws[2]}, {Type: bitlocker.Password}, {Type: bitlocker.ExternalKey, ExternalKey: &ext}}})
	return c, d
}

// only returns the protectors of type t.
func only(v bitlockersim.VolumeSpec, t bitlocker.ProtectorType) []bitlockersim.ProtectorSpec {
	var out []bitlockersim.ProtectorSpec
	for _, p := range v.Protectors {
		if p.Type == t {
			out = append(out, p)
		}
	}
	return out
}

// others returns the protectors not of type t.
func others(v bitlockersim.VolumeSpec, t bitlocker.ProtectorType) []string {
	var out []string
	for _, p := range v.Protectors {
		if p.Type != t {
			out = append(out, string(p.Type)+" "+p.KeyID)
		}
	}
	return out
}

// changeOps counts the simulator's operations so far that change a volume: those a fault with
// no Method counts.
func (r *rig) changeOps() int {
	n := 0
	for _, op := range r.sim.Log() {
		if op.Method.Changes() {
			n++
		}
	}
	return n
}
