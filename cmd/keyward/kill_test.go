package main

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/keyward/keyward/internal/recovery"

	"github.com/keyward/keyward/internal/bitlockertest"
)

// serveKillable starts `keyward serve` on dir, to be killed with SIGKILL.
func serveKillable(t *testing.T, bin, dir string) (*exec.Cmd, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "serve", "--data-dir", dir, "--listen", addr)
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitHealthy(t, "http://"+addr)
	return cmd, "http://" + addr
}

// TestKilledAfter201KeepsKey kills the real binary with SIGKILL the moment it has answered 201
// to an escrow: an acknowledged key must survive, because 201 is only sent once it is durable.
func TestKilledAfter201KeepsKey(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := testBinary(t)
	dir := t.TempDir()
	serve := func() (*exec.Cmd, string) { return serveKillable(t, bin, dir) }
	cmd, url := serve()
	admin, deviceID, deviceToken, _ := setUp(t, url, dir)
	samples := bitlockertest.Samples(t)
	for _, s := range samples[:3] {
		mustCall(t, 201, "PUT", url+"/api/agent/keys/"+s.KeyID, deviceToken, escrowJSON(s.Password))
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	_, url = serve()
	var v struct {
		Keys []struct{ KeyID, RecoveryPassword string }
	}
	if err := json.Unmarshal(mustCall(t, 200, "GET", url+"/api/devices/security/bitlocker/keys/"+deviceID+"?reason=after+crash", admin, ""), &v); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, k := range v.Keys {
		got[k.KeyID] = k.RecoveryPassword
	}
	for _, s := range samples[:3] {
		if got[s.KeyID] != s.Password {
			t.Errorf("key %s acknowledged with 201 is gone after SIGKILL: %v", s.KeyID, fmt.Sprint(got[s.KeyID] != ""))
		}
	}
}

// TestKilledDuringBatchedLoadKeepsEveryAcknowledgedWrite kills the real binary with SIGKILL
// while 16 clients escrow keys and view them, so that writes share commits: every escrow
// answered 201 must have its key after the restart, every view answered 200 its key.read
// events, and the audit chain must verify. What was never answered may be lost.
func TestKilledDuringBatchedLoadKeepsEveryAcknowledgedWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := testBinary(t)
	dir := t.TempDir()
	cmd, url := serveKillable(t, bin, dir)
	admin, _, _, _ := setUp(t, url, dir)
	type device struct{ id, token string }
	var devices []device
	for i := range 4 {
		id, token := enrollAt(t, url, admin, fmt.Sprintf("LT-KILL-%d", i))
		devices = append(devices, device{id, token})
	}

	type escrowed struct{ deviceID, keyID, password string }
	type viewed struct {
		deviceID, reason string
		keyIDs           []string
	}
	var (
		mu       sync.Mutex
		escrows  []escrowed
		views    []viewed
		acked    atomic.Int64
		stopping atomic.Bool
		wg       sync.WaitGroup
	)
	client := &http.Client{Timeout: 10 * time.Second}
	do := func(method, url, token, body string) (int, []byte, bool) {
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		if err != nil {
			t.Error(err)
			return 0, nil, false
		}
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := client.Do(req)
		if err != nil {
			if !stopping.Load() {
				t.Errorf("%s before the kill: %v", method, err)
			}
			return 0, nil, false
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			return 0, nil, false // cut off by the kill: not an answer
		}
		return res.StatusCode, b, true
	}
	for w := range 16 {
		wg.Go(func() {
			d := devices[w%len(devices)]
			for n := 0; !stopping.Load(); n++ {
				if w%2 == 0 {
					pw, err := recovery.GeneratePassword(rand.Reader)
					if err != nil {
						t.Error(err)
						return
					}
					keyID := strings.ToUpper(uuid.NewString())
					status, body, ok := do("PUT", url+"/api/agent/keys/"+keyID, d.token, escrowJSON(pw))
					if !ok {
						return
					}
					if status != 201 {
						t.Errorf("escrow: %d %s", status, body)
						return
					}
					mu.Lock()
					escrows = append(escrows, escrowed{d.id, keyID, pw})
					mu.Unlock()
				} else {
					reason := fmt.Sprintf("crash test view %d-%d", w, n)
					status, body, ok := do("GET", url+"/api/devices/security/bitlocker/keys/"+d.id+"?reason="+strings.ReplaceAll(reason, " ", "+"), admin, "")
					if !ok {
						return
					}
					var v struct{ Keys []struct{ KeyID string } }
					if status != 200 || json.Unmarshal(body, &v) != nil {
						t.Errorf("view: %d %s", status, body)
						return
					}
					vw := viewed{deviceID: d.id, reason: reason}
					for _, k := range v.Keys {
						vw.keyIDs = append(vw.keyIDs, k.KeyID)
					}
					mu.Lock()
					views = append(views, vw)
					mu.Unlock()
				}
				acked.Add(1)
			}
		})
	}
	for deadline := time.Now().Add(30 * time.Second); acked.Load() < 400 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	// The load must have been batched for this test to mean anything.
	metrics := string(mustCall(t, 200, "GET", url+"/metrics", admin, ""))
	commits, writes := counter(t, metrics, "keyward_store_commits_total"), counter(t, metrics, "keyward_store_writes_total")
	stopping.Store(true)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	wg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("killed after %d escrows and %d views answered; %d commits for %d writes before that", len(escrows), len(views), commits, writes)
	if commits >= writes {
		t.Errorf("%d commits for %d writes: the load was not batched", commits, writes)
	}

	out, err := exec.Command(bin, "audit", "verify", "--data-dir", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("audit verify after SIGKILL: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "audit", "export", "--format", "ndjson", "--data-dir", dir).Output()
	if err != nil {
		t.Fatalf("audit export: %v", err)
	}
	type read struct{ deviceID, keyID, reason string }
	reads := map[read]bool{}
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		var r struct{ Action, DeviceID, KeyID, Reason, Outcome string }
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("audit export line %q: %v", line, err)
		}
		if r.Action == "key.read" && r.Outcome == "success" {
			reads[read{r.DeviceID, r.KeyID, r.Reason}] = true
		}
	}
	for _, v := range views {
		keyIDs := v.keyIDs
		if len(keyIDs) == 0 {
			keyIDs = []string{""} // a view of no keys is one event without a key
		}
		for _, k := range keyIDs {
			if !reads[read{v.deviceID, k, v.reason}] {
				t.Errorf("view %q answered 200 but its key.read event for key %q is gone after SIGKILL", v.reason, k)
			}
		}
	}

	_, url = serveKillable(t, bin, dir)
	held := map[string]string{}
	for _, d := range devices {
		maps.Copy(held, viewKeys(t, url, admin, d.id))
	}
	for _, e := range escrows {
		if held[e.keyID] != e.password {
			t.Errorf("key %s answered 201 is gone after SIGKILL (held: %v)", e.keyID, held[e.keyID] != "")
		}
	}
}
