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

// TestDevicesSet changes a device's owner and tags from the command line beside a running
// server: a helpdesk scoped to a tag sees the device once it carries the tag, bad input changes
// nothing, and the change is one device.update event from the command line.
func TestDevicesSet(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir, nil)
	admin, deviceID, _, _ := setUp(t, r.URL(), dir)
	run := cliRunner(t, dir)
	run(0, "users", "add", "--email", "hd@example.com", "--role", "helpdesk", "--scope-tags", "lab")
	helpdesk := strings.TrimSpace(run(0, "tokens", "create", "--user", "hd@example.com"))
	mustCall(t, 403, "GET", r.URL()+"/api/devices/"+deviceID, helpdesk, "")

	run(2, "devices", "set", "--id", deviceID)
	if out := run(2, "devices", "set", "--id", deviceID, "--tag", "Lab"); !strings.Contains(out, "tags[0]:") {
		t.Errorf("a bad tag printed %q", out)
	}
	if out := run(2, "devices", "set", "--id", deviceID, "--owner", "ſam@example.com"); !strings.Contains(out, "ownerUpn:") {
		t.Errorf("a look-alike owner printed %q", out)
	}
	run(2, "devices", "set", "--id", deviceID, "--tag", "lab", "--no-tags")
	run(1, "devices", "set", "--id", "00000000-0000-4000-8000-000000000000", "--tag", "lab")
	if out := run(0, "devices", "set", "--id", deviceID, "--owner", "Bob@example.com", "--tag", "lab", "--tag", "berlin"); out != deviceID+"\tLT-0042\towner bob@example.com\ttags berlin,lab\n" {
		t.Fatalf("devices set printed %q", out)
	}
	if out := run(0, "help"); !strings.Contains(out, "keyward devices set --id DEVICE_ID [--owner UPN] [--tag T]... [--no-tags]") {
		t.Errorf("usage does not name devices set")
	}

	var d struct {
		OwnerUPN string
		Tags     []string
	}
	if err := json.Unmarshal(mustCall(t, 200, "GET", r.URL()+"/api/devices/"+deviceID, helpdesk, ""), &d); err != nil ||
		d.OwnerUPN != "bob@example.com" || strings.Join(d.Tags, ",") != "berlin,lab" {
		t.Errorf("device after devices set: %+v, %v", d, err)
	}
	var events struct {
		Items []struct{ Action, Outcome, Source, DeviceID, Detail string }
	}
	if err := json.Unmarshal(mustCall(t, 200, "GET", r.URL()+"/api/devices/security/bitlocker/keys/audit?action=device.update", admin, ""), &events); err != nil {
		t.Fatal(err)
	}
	if len(events.Items) != 2 || events.Items[0].Source != "cli" || events.Items[0].Outcome != "success" || events.Items[0].DeviceID != deviceID ||
		events.Items[0].Detail != `device LT-0042: ownerUpn "alice@example.com" -> "bob@example.com"; tags [] -> [berlin lab]` ||
		events.Items[1].Outcome != "denied" {
		t.Errorf("device.update events = %+v", events.Items)
	}

	run(0, "devices", "set", "--id", deviceID, "--owner", "", "--no-tags")
	mustCall(t, 403, "GET", r.URL()+"/api/devices/"+deviceID, helpdesk, "")
}
