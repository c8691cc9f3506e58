package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/bitlockertest"
)

// TestDevicesRetire retires a device from the command line beside a running server: its token
// is refused at the server's next request, its key is superseded, and the change is one
// device.retire event from the command line.
func TestDevicesRetire(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir, nil)
	admin, deviceID, deviceToken, _ := setUp(t, r.URL(), dir)
	s := bitlockertest.Samples(t)[0]
	mustCall(t, 201, "PUT", r.URL()+"/api/agent/keys/"+s.KeyID, deviceToken, escrowJSON(s.Password))
	run := cliRunner(t, dir)

	run(2, "devices", "retire", "--id", deviceID)
	run(2, "devices", "retire", "--id", deviceID, "--reason", " ")
	run(1, "devices", "retire", "--id", "00000000-0000-4000-8000-000000000000", "--reason", "wiped")
	if out := run(0, "devices", "retire", "--id", deviceID, "--reason", "wiped and sold"); !strings.HasPrefix(out, "retired "+deviceID+"\tLT-0042\t20") {
		t.Fatalf("devices retire printed %q", out)
	}
	if out := run(1, "devices", "retire", "--id", deviceID, "--reason", "again"); !strings.Contains(out, "already retired") {
		t.Fatalf("retiring twice printed %q", out)
	}
	if out := run(0, "help"); !strings.Contains(out, "keyward devices retire --id DEVICE_ID --reason TEXT") {
		t.Errorf("usage does not name devices retire")
	}

	mustCall(t, 401, "GET", r.URL()+"/api/agent/commands", deviceToken, "")
	var list struct{ Items []struct{ DeviceID string } }
	if err := json.Unmarshal(mustCall(t, 200, "GET", r.URL()+"/api/devices", admin, ""), &list); err != nil || len(list.Items) != 0 {
		t.Errorf("devices after retire: %+v, %v", list.Items, err)
	}
	var keys struct {
		Items []struct{ KeyID, Status string }
	}
	if err := json.Unmarshal(mustCall(t, 200, "GET", r.URL()+"/api/devices/security/bitlocker/keys?deviceId="+deviceID, admin, ""), &keys); err != nil ||
		len(keys.Items) != 1 || keys.Items[0].Status != "superseded" {
		t.Errorf("keys after retire: %+v, %v", keys.Items, err)
	}
	var events struct {
		Items []struct{ Action, Outcome, Source, DeviceID, Reason string }
	}
	if err := json.Unmarshal(mustCall(t, 200, "GET", r.URL()+"/api/devices/security/bitlocker/keys/audit?action=device.retire", admin, ""), &events); err != nil {
		t.Fatal(err)
	}
	if len(events.Items) != 1 || events.Items[0].Source != "cli" || events.Items[0].Outcome != "success" ||
		events.Items[0].DeviceID != deviceID || events.Items[0].Reason != "wiped and sold" {
		t.Errorf("device.retire events = %+v", events.Items)
	}
}
