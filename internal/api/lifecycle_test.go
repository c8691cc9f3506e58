package api_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/csv"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/keyward/keyward/internal/bitlockertest"
	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/recovery"
	"github.com/keyward/keyward/internal/store"
)

// agent is a scripted device: it talks only the agent API, the way keyward-agent does.
type agent struct {
	e       *env
	d       device
	volumes map[string]*agentVolume
}

type agentVolume struct {
	report    volumeReport
	passwords map[string]string // keyId -> password of recovery-password protectors on the volume
}

func newAgent(e *env, hostname, owner string) *agent {
	return &agent{e: e, d: e.enroll(hostname, owner), volumes: map[string]*agentVolume{}}
}

// addVolume creates an encrypted volume with one recovery password (escrowed) and a TPM protector.
func (a *agent) addVolume(id, mount, password, keyID string) {
	a.volumes[id] = &agentVolume{
		report:    volumeReport{VolumeID: id, MountPoint: mount, VolumeType: "operatingSystem", ProtectionStatus: "on", EncryptionStatus: "fullyEncrypted"},
		passwords: map[string]string{},
	}
	a.volumes[id].passwords[keyID] = password
	a.e.must(201, a.e.do("PUT", "/api/agent/keys/"+keyID, a.d.Token, escrowBody(id, password)))
}

func (a *agent) fingerprint(password string) string {
	vk, err := base64.StdEncoding.DecodeString(a.d.VerificationKey)
	if err != nil {
		a.e.t.Fatal(err)
	}
	m := hmac.New(sha256.New, vk)
	m.Write([]byte(password))
	return hex.EncodeToString(m.Sum(nil))
}

// report sends the device's true state, with fingerprints, and returns the commands answered.
func (a *agent) report(events ...map[string]any) []command {
	a.e.t.Helper()
	vols := []volumeReport{}
	for _, v := range a.volumes {
		r := v.report
		r.KeyProtectors = []map[string]any{{"keyId": "53465F4B-98AB-45E2-823D-1F93C0911081", "type": "tpm"}}
		for keyID, pw := range v.passwords {
			r.KeyProtectors = append(r.KeyProtectors, map[string]any{"keyId": keyID, "type": "recoveryPassword", "fingerprint": a.fingerprint(pw)})
		}
		vols = append(vols, r)
	}
	if events == nil {
		events = []map[string]any{}
	}
	var out struct{ Commands []command }
	a.e.must(200, a.e.do("POST", "/api/agent/report", a.d.Token, map[string]any{"volumes": vols, "events": events})).json(a.e.t, &out)
	return out.Commands
}

type command struct{ ID, Type, VolumeID, KeyID string }

func (a *agent) commands() []command {
	a.e.t.Helper()
	var out struct{ Items []command }
	a.e.must(200, a.e.do("GET", "/api/agent/commands", a.d.Token, nil)).json(a.e.t, &out)
	return out.Items
}

// rotate carries out a rotation in the SPEC §4 order: add a protector, escrow it, remove the
// old one, report completion.
func (a *agent) rotate(c command) string {
	a.e.t.Helper()
	pw, err := recovery.GeneratePassword(rand.Reader)
	if err != nil {
		a.e.t.Fatal(err)
	}
	newID := strings.ToUpper(uuid.NewString())
	v := a.volumes[c.VolumeID]
	v.passwords[newID] = pw
	a.e.must(201, a.e.do("PUT", "/api/agent/keys/"+newID, a.d.Token, escrowBody(c.VolumeID, pw)))
	delete(v.passwords, c.KeyID)
	a.e.must(200, a.e.do("POST", "/api/agent/commands/"+c.ID+"/result", a.d.Token, map[string]string{"status": "completed", "newKeyId": newID}))
	return newID
}

func (e *env) deviceStatus(id string) (string, map[string]string) {
	e.t.Helper()
	var d struct {
		EscrowStatus, EscrowStatusReason string
		Volumes                          []struct{ VolumeID, EscrowStatus string }
	}
	e.must(200, e.do("GET", "/api/devices/"+id, e.admin, nil)).json(e.t, &d)
	vols := map[string]string{}
	for _, v := range d.Volumes {
		vols[v.VolumeID] = v.EscrowStatus
	}
	return d.EscrowStatus, vols
}

func (e *env) keys(deviceID string) map[string]keyItem {
	e.t.Helper()
	var list struct{ Items []keyItem }
	e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys?limit=1000&deviceId="+deviceID, e.admin, nil)).json(e.t, &list)
	out := map[string]keyItem{}
	for _, k := range list.Items {
		out[k.KeyID] = k
	}
	return out
}

func (e *env) runJobs() store.JobResult {
	e.t.Helper()
	res, err := e.db.RunJobs(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return res
}

func TestManualRotationEndToEnd(t *testing.T) {
	e := newEnv(t)
	s := bitlockertest.Samples(t)[0]
	a := newAgent(e, "LT-0042", "alice@example.com")
	a.addVolume("C", "C:", s.Password, s.KeyID)
	a.report()
	if st, _ := e.deviceStatus(a.d.ID); st != "escrowed" {
		t.Fatalf("before rotation: %s", st)
	}
	e.must(202, e.do("POST", "/api/devices/security/bitlocker/keys/"+a.d.ID+"/rotate", e.admin, map[string]string{"reason": "scheduled"}))
	if st, _ := e.deviceStatus(a.d.ID); st != "pending" {
		t.Fatalf("rotation requested: status %s, want pending", st)
	}
	cmds := a.commands()
	if len(cmds) != 1 || cmds[0].Type != "rotateRecoveryPassword" || cmds[0].KeyID != s.KeyID {
		t.Fatalf("commands %+v", cmds)
	}
	e.clock.Advance(time.Minute)
	newID := a.rotate(cmds[0])
	completedAt := e.clock.Now()
	a.report()

	keys := e.keys(a.d.ID)
	old, fresh := keys[s.KeyID], keys[newID]
	if old.Status != "superseded" || old.RetainUntil == nil || !old.RetainUntil.Equal(completedAt.Add(7*24*time.Hour)) {
		t.Fatalf("old key %+v, want superseded until %v", old, completedAt.Add(7*24*time.Hour))
	}
	if fresh.Status != "active" || fresh.Verification != "verified" {
		t.Fatalf("new key %+v", fresh)
	}
	if st, _ := e.deviceStatus(a.d.ID); st != "escrowed" {
		t.Fatalf("after rotation: %s", st)
	}
	var actions []string
	for _, ev := range e.auditEvents("deviceId=" + a.d.ID) {
		if strings.HasPrefix(ev.Action, "key.rotate.") {
			actions = append([]string{ev.Action}, actions...)
		}
	}
	if strings.Join(actions, ",") != "key.rotate.request,key.rotate.deliver,key.rotate.complete" {
		t.Fatalf("rotation audit trail %v", actions)
	}
	if len(a.commands()) != 0 {
		t.Fatal("a completed rotation is still a pending command")
	}
	// The old key can still be viewed until retention ends.
	var v struct{ Keys []keyItem }
	e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys/"+a.d.ID+"?reason=check", e.admin, nil)).json(t, &v)
	if len(v.Keys) != 2 {
		t.Fatalf("view returned %d keys, want the active and the retained one", len(v.Keys))
	}
}

func TestViewsCoalesceIntoOneRotation(t *testing.T) {
	e := newEnv(t)
	s := bitlockertest.Samples(t)[0]
	a := newAgent(e, "LT-0042", "alice@example.com")
	a.addVolume("C", "C:", s.Password, s.KeyID)
	a.report()
	for range 3 {
		e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys/"+a.d.ID+"?reason=Forgotten+PIN", e.admin, nil))
	}
	cmds := a.commands()
	if len(cmds) != 1 || cmds[0].VolumeID != "C" {
		t.Fatalf("three views left %d open rotations: %+v", len(cmds), cmds)
	}
	if n := len(e.auditEvents("action=key.read&deviceId=" + a.d.ID)); n != 3 {
		t.Fatalf("%d key.read events, want 3", n)
	}

	t.Run("setting off", func(t *testing.T) {
		e.must(200, e.do("PUT", "/api/settings", e.admin, map[string]any{"autoRotateOnDisclosure": false}))
		b := newAgent(e, "LT-0043", "bob@example.com")
		b.addVolume("C", "C:", bitlockertest.Samples(t)[1].Password, bitlockertest.Samples(t)[1].KeyID)
		b.report()
		e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys/"+b.d.ID+"?reason=test", e.admin, nil))
		if cmds := b.commands(); len(cmds) != 0 {
			t.Fatalf("with autoRotateOnDisclosure off a view opened %+v", cmds)
		}
	})
}

func TestRecoveryUsedOpensRotation(t *testing.T) {
	e := newEnv(t)
	s := bitlockertest.Samples(t)[0]
	a := newAgent(e, "LT-0042", "alice@example.com")
	a.addVolume("C", "C:", s.Password, s.KeyID)
	cmds := a.report(map[string]any{"type": "recoveryUsed", "volumeId": "C", "keyId": s.KeyID, "time": e.clock.Now()})
	if len(cmds) != 1 || cmds[0].Type != "rotateRecoveryPassword" || cmds[0].KeyID != s.KeyID {
		t.Fatalf("after recoveryUsed the report answered %+v", cmds)
	}
	var found bool
	for _, ev := range e.auditEvents("action=key.rotate.request&deviceId=" + a.d.ID) {
		found = found || strings.Contains(ev.Detail, "recoveryUsed")
	}
	if !found {
		t.Fatal("no rotation request recorded for recoveryUsed")
	}
}

func TestRotationTimeout(t *testing.T) {
	e := newEnv(t)
	s := bitlockertest.Samples(t)[0]
	a := newAgent(e, "LT-0042", "alice@example.com")
	a.addVolume("C", "C:", s.Password, s.KeyID)
	a.report()
	e.must(202, e.do("POST", "/api/devices/security/bitlocker/keys/"+a.d.ID+"/rotate", e.admin, nil))

	// Offline: requested is not a failure, however long.
	e.clock.Advance(3 * time.Hour)
	if res := e.runJobs(); res.TimedOut != 0 {
		t.Fatalf("a rotation never delivered timed out: %+v", res)
	}
	cmds := a.commands()
	e.clock.Advance(59 * time.Minute)
	if res := e.runJobs(); res.TimedOut != 0 {
		t.Fatalf("timed out before the timeout: %+v", res)
	}
	e.clock.Advance(2 * time.Minute)
	if res := e.runJobs(); res.TimedOut != 1 {
		t.Fatalf("jobs %+v, want one rotation timed out", res)
	}
	if st, _ := e.deviceStatus(a.d.ID); st != "failed" {
		t.Fatalf("after the timeout: %s, want failed", st)
	}
	e.must(409, e.do("POST", "/api/agent/commands/"+cmds[0].ID+"/result", a.d.Token, map[string]string{"status": "completed", "newKeyId": s.KeyID}))

	e.must(202, e.do("POST", "/api/devices/security/bitlocker/keys/"+a.d.ID+"/rotate", e.admin, nil))
	cmds = a.commands()
	a.rotate(cmds[0])
	a.report()
	if st, _ := e.deviceStatus(a.d.ID); st != "escrowed" {
		t.Fatalf("after a later completed rotation: %s, want escrowed", st)
	}
}

func TestPurgeAfterRetention(t *testing.T) {
	e := newEnv(t)
	s := bitlockertest.Samples(t)[0]
	a := newAgent(e, "LT-0042", "alice@example.com")
	a.addVolume("C", "C:", s.Password, s.KeyID)
	a.report()
	raw := openRaw(t, e.dir)
	var ciphertext, wrapped []byte
	if err := raw.QueryRow(`SELECT ciphertext, wrapped_key FROM recovery_keys WHERE key_id = $1`, s.KeyID).Scan(&ciphertext, &wrapped); err != nil {
		t.Fatal(err)
	}
	e.must(202, e.do("POST", "/api/devices/security/bitlocker/keys/"+a.d.ID+"/rotate", e.admin, nil))
	a.rotate(a.commands()[0])
	a.report()

	e.clock.Advance(7*24*time.Hour - time.Minute)
	if res := e.runJobs(); res.Purged != 0 {
		t.Fatalf("purged before retention ended: %+v", res)
	}
	e.clock.Advance(2 * time.Minute)
	if res := e.runJobs(); res.Purged != 1 {
		t.Fatalf("jobs %+v, want one key purged", res)
	}
	if res := e.runJobs(); res.Purged != 0 {
		t.Fatalf("a second run purged again: %+v", res)
	}

	var v struct{ Keys []keyItem }
	e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys/"+a.d.ID+"?reason=check", e.admin, nil)).json(t, &v)
	for _, k := range v.Keys {
		if k.KeyID == s.KeyID || k.RecoveryPassword == s.Password {
			t.Fatalf("the purged key is still disclosed: %+v", k)
		}
	}
	if k := e.keys(a.d.ID)[s.KeyID]; k.Status != "purged" {
		t.Fatalf("purged key metadata %+v", k)
	}
	var ct, wk []byte
	if err := raw.QueryRow(`SELECT ciphertext, wrapped_key FROM recovery_keys WHERE key_id = $1`, s.KeyID).Scan(&ct, &wk); err != nil {
		t.Fatal(err)
	}
	if ct != nil || wk != nil {
		t.Fatal("the purged row still holds its ciphertext or wrapped key")
	}
	files, _ := filepath.Glob(filepath.Join(e.dir, store.DatabaseFile+"*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, ciphertext) || bytes.Contains(b, wrapped) {
			t.Errorf("%s still contains the purged key's sealed bytes", filepath.Base(f))
		}
	}
	purges := e.auditEvents("action=key.purge")
	if len(purges) != 1 || purges[0].KeyID != s.KeyID || purges[0].Actor.Type != "system" {
		t.Fatalf("key.purge events %+v", purges)
	}
	// The history of the key is kept.
	if n := len(e.auditEvents("keyId=" + s.KeyID)); n < 3 {
		t.Fatalf("only %d events left for the purged key", n)
	}
}

func TestFingerprintVerification(t *testing.T) {
	e := newEnv(t)
	s := bitlockertest.Samples(t)[0]
	a := newAgent(e, "LT-0042", "alice@example.com")
	a.addVolume("C", "C:", s.Password, s.KeyID)
	a.report()
	k := e.keys(a.d.ID)[s.KeyID]
	if k.Verification != "verified" {
		t.Fatalf("right fingerprint: verification %q", k.Verification)
	}
	var full struct {
		Items []struct{ VerifiedAt *time.Time }
	}
	e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys?deviceId="+a.d.ID, e.admin, nil)).json(t, &full)
	if full.Items[0].VerifiedAt == nil || !full.Items[0].VerifiedAt.Equal(e.clock.Now()) {
		t.Fatalf("verifiedAt %v, want %v", full.Items[0].VerifiedAt, e.clock.Now())
	}

	// The volume's password changed behind Keyward's back (manage-bde run by hand).
	other := bitlockertest.Samples(t)[1].Password
	a.volumes["C"].passwords[s.KeyID] = other
	cmds := a.report()
	if k := e.keys(a.d.ID)[s.KeyID]; k.Verification != "mismatch" {
		t.Fatalf("wrong fingerprint: verification %q", k.Verification)
	}
	if st, _ := e.deviceStatus(a.d.ID); st != "failed" {
		t.Fatalf("mismatch: device %s, want failed", st)
	}
	if len(cmds) != 1 || cmds[0].Type != "escrowRecoveryPassword" || cmds[0].KeyID != s.KeyID {
		t.Fatalf("commands after a mismatch %+v", cmds)
	}
	// The re-escrow replaces the held material and the next report verifies it.
	e.must(201, e.do("PUT", "/api/agent/keys/"+s.KeyID, a.d.Token, escrowBody("C", other)))
	e.must(200, e.do("POST", "/api/agent/commands/"+cmds[0].ID+"/result", a.d.Token, map[string]string{"status": "completed", "newKeyId": s.KeyID}))
	if cmds := a.report(); len(cmds) != 0 {
		t.Fatalf("commands after the re-escrow %+v", cmds)
	}
	if st, _ := e.deviceStatus(a.d.ID); st != "escrowed" {
		t.Fatalf("after re-escrow: %s", st)
	}
}

func TestEscrowStatusRules(t *testing.T) {
	e := newEnv(t)
	samples := bitlockertest.Samples(t)
	vol := func(id, protection, encryption string, protectors ...map[string]any) volumeReport {
		return volumeReport{VolumeID: id, MountPoint: id + ":", VolumeType: "fixedData", ProtectionStatus: protection, EncryptionStatus: encryption, KeyProtectors: protectors}
	}
	rp := func(s bitlockertest.Sample) map[string]any {
		return map[string]any{"keyId": s.KeyID, "type": "recoveryPassword"}
	}

	cases := []struct {
		name  string
		setup func(d device)
		want  string
	}{
		{"not available: BitLocker off on every volume", func(d device) {
			e.report(d, vol("C", "off", "fullyDecrypted"), vol("D", "off", "fullyDecrypted"))
		}, "notAvailable"},
		{"failed: the agent reported a failed escrow", func(d device) {
			e.report(d, vol("C", "on", "fullyEncrypted"))
			e.must(200, e.do("POST", "/api/agent/report", d.Token, map[string]any{"volumes": []volumeReport{vol("C", "on", "fullyEncrypted", map[string]any{"keyId": samples[2].KeyID, "type": "tpm"})},
				"events": []map[string]any{{"type": "escrowFailed", "volumeId": "C", "message": "network unreachable"}}}))
		}, "failed"},
		{"failed: missing escrow past the grace period", func(d device) {
			e.report(d, vol("C", "on", "fullyEncrypted", rp(samples[3])))
			e.clock.Advance(61 * time.Minute)
		}, "failed"},
		{"pending: enrolled, not reported", func(d device) {}, "pending"},
		{"pending: encrypting within the grace period", func(d device) {
			e.report(d, vol("C", "on", "encryptionInProgress", rp(samples[4])))
		}, "pending"},
		{"pending: rotation in progress", func(d device) {
			e.must(201, e.do("PUT", "/api/agent/keys/"+samples[5].KeyID, d.Token, escrowBody("C", samples[5].Password)))
			e.report(d, vol("C", "on", "fullyEncrypted", rp(samples[5])))
			e.must(202, e.do("POST", "/api/devices/security/bitlocker/keys/"+d.ID+"/rotate", e.admin, nil))
		}, "pending"},
		{"escrowed: every encrypted volume has an active escrowed password", func(d device) {
			e.must(201, e.do("PUT", "/api/agent/keys/"+samples[6].KeyID, d.Token, escrowBody("C", samples[6].Password)))
			e.report(d, vol("C", "on", "fullyEncrypted", rp(samples[6])), vol("D", "off", "fullyDecrypted"))
		}, "escrowed"},
		{"failed beats pending", func(d device) {
			e.must(201, e.do("PUT", "/api/agent/keys/"+samples[7].KeyID, d.Token, escrowBody("C", samples[7].Password)))
			e.report(d, vol("C", "on", "encryptionInProgress", rp(samples[7])), vol("D", "on", "fullyEncrypted"))
			e.clock.Advance(2 * time.Hour)
		}, "failed"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := e.enroll("LT-"+string(rune('A'+i)), "")
			c.setup(d)
			if st, _ := e.deviceStatus(d.ID); st != c.want {
				t.Fatalf("escrowStatus %s, want %s", st, c.want)
			}
			var list struct{ Items []struct{ DeviceID string } }
			e.must(200, e.do("GET", "/api/devices?limit=1000&escrowStatus="+c.want, e.admin, nil)).json(t, &list)
			found := false
			for _, it := range list.Items {
				found = found || it.DeviceID == d.ID
			}
			if !found {
				t.Fatalf("device not in the list filtered by %s", c.want)
			}
		})
	}
}

func TestEscrowReport(t *testing.T) {
	e := newEnv(t)
	samples := bitlockertest.Samples(t)
	good := newAgent(e, "LT-GOOD", "alice@example.com")
	good.addVolume("C", "C:", samples[0].Password, samples[0].KeyID)
	good.report()
	missing := e.enroll("LT-MISSING", "")
	e.report(missing, volumeReport{VolumeID: "C", MountPoint: "C:", VolumeType: "operatingSystem", ProtectionStatus: "on", EncryptionStatus: "fullyEncrypted"})
	off := e.enroll("LT-OFF", "")
	e.report(off, volumeReport{VolumeID: "C", MountPoint: "C:", VolumeType: "operatingSystem", ProtectionStatus: "off", EncryptionStatus: "fullyDecrypted"})
	silent := e.enroll("LT-SILENT", "")
	failing := newAgent(e, "LT-FAIL", "")
	failing.addVolume("C", "C:", samples[1].Password, samples[1].KeyID)
	failing.report(map[string]any{"type": "rotationFailed", "volumeId": "C", "message": "TPM locked out"})
	e.clock.Advance(2 * time.Hour)

	var rep struct {
		Total   int
		Counts  map[string]int
		Devices []struct{ DeviceID, DeviceName, EscrowStatus, Problem, Why string }
	}
	e.must(200, e.do("GET", "/api/reports/escrow", e.admin, nil)).json(t, &rep)
	sum := 0
	for _, n := range rep.Counts {
		sum += n
	}
	if rep.Total != 5 || sum != 5 {
		t.Fatalf("total %d, counts %v (sum %d), want 5 devices", rep.Total, rep.Counts, sum)
	}
	want := map[string]string{missing.ID: "missingEscrow", silent.ID: "pendingTooLong", failing.d.ID: "failed"}
	if len(rep.Devices) != len(want) {
		t.Fatalf("report lists %+v", rep.Devices)
	}
	for _, d := range rep.Devices {
		if want[d.DeviceID] != d.Problem || d.Why == "" {
			t.Errorf("device %s listed as %q (%s), want %q", d.DeviceName, d.Problem, d.Why, want[d.DeviceID])
		}
	}
	_ = off
	r := e.must(200, e.do("GET", "/api/reports/escrow?format=csv", e.admin, nil))
	rows, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1+len(rep.Devices) || rows[0][0] != "deviceId" {
		t.Fatalf("csv %q, want a header and %d rows", rows, len(rep.Devices))
	}
	e.must(200, e.do("GET", "/api/reports/escrow", e.person(escrow.RoleHelpdesk, "hd@example.com"), nil))
	e.must(403, e.do("GET", "/api/reports/escrow", e.person(escrow.RoleUser, "alice@example.com"), nil))

	// Pages of two: the same devices in the same order, the same counts on each page.
	var paged []string
	path := "/api/reports/escrow?limit=2"
	for pages := 0; ; pages++ {
		var p struct {
			Total      int
			Counts     map[string]int
			NextCursor *string
			Devices    []struct{ DeviceID string }
		}
		e.must(200, e.do("GET", path, e.admin, nil)).json(t, &p)
		if p.Total != rep.Total || len(p.Devices) > 2 || pages > 3 {
			t.Fatalf("page %d: total %d, %d devices", pages, p.Total, len(p.Devices))
		}
		for _, d := range p.Devices {
			paged = append(paged, d.DeviceID)
		}
		if p.NextCursor == nil {
			break
		}
		path = "/api/reports/escrow?limit=2&cursor=" + url.QueryEscape(*p.NextCursor)
	}
	var whole []string
	for _, d := range rep.Devices {
		whole = append(whole, d.DeviceID)
	}
	if strings.Join(paged, ",") != strings.Join(whole, ",") {
		t.Errorf("pages list %v, the whole report %v", paged, whole)
	}
	e.must(400, e.do("GET", "/api/reports/escrow?cursor=nonsense", e.admin, nil))
	e.must(400, e.do("GET", "/api/reports/escrow?limit=0", e.admin, nil))
}

func TestSettings(t *testing.T) {
	e := newEnv(t)
	var s map[string]any
	e.must(200, e.do("GET", "/api/settings", e.admin, nil)).json(t, &s)
	want := map[string]any{"autoRotateOnDisclosure": true, "selfServiceEnabled": true, "retentionPeriod": "7d", "escrowGracePeriod": "1h", "rotationTimeout": "1h", "maxKeyAge": "0"}
	for k, v := range want {
		if s[k] != v {
			t.Errorf("default %s = %v, want %v", k, s[k], v)
		}
	}
	e.must(200, e.do("PUT", "/api/settings", e.admin, map[string]any{"retentionPeriod": "3d", "selfServiceEnabled": false})).json(t, &s)
	if s["retentionPeriod"] != "3d" || s["selfServiceEnabled"] != false || s["escrowGracePeriod"] != "1h" {
		t.Fatalf("after PUT %v", s)
	}
	for name, body := range map[string]map[string]any{
		"retentionPeriod":        {"retentionPeriod": "0s", "escrowGracePeriod": "2h"},
		"escrowGracePeriod":      {"escrowGracePeriod": "soon"},
		"autoRotateOnDisclosure": {"autoRotateOnDisclosure": "yes"},
		"colour":                 {"colour": "blue"},
		"rotationTimeout":        {"rotationTimeout": 60},
	} {
		r := e.must(400, e.do("PUT", "/api/settings", e.admin, body))
		if !strings.Contains(r.errorMessage(t), name) {
			t.Errorf("message %q does not name %s", r.errorMessage(t), name)
		}
	}
	e.must(200, e.do("GET", "/api/settings", e.admin, nil)).json(t, &s)
	if s["retentionPeriod"] != "3d" || s["escrowGracePeriod"] != "1h" {
		t.Fatalf("a refused PUT changed settings: %v", s)
	}
	changes := e.auditEvents("action=settings.update")
	if len(changes) != 1 || !strings.Contains(changes[0].Detail, "retentionPeriod 7d -> 3d") {
		t.Fatalf("settings audit %+v", changes)
	}
	e.must(403, e.do("PUT", "/api/settings", e.person(escrow.RoleHelpdesk, "hd@example.com"), map[string]any{"maxKeyAge": "90d"}))
	e.must(403, e.do("GET", "/api/settings", e.person(escrow.RoleAuditor, "au@example.com"), nil))

	// Self-service off: a user may no longer see even their own device's key.
	a := newAgent(e, "LT-ALICE", "alice@example.com")
	a.addVolume("C", "C:", bitlockertest.Samples(t)[0].Password, bitlockertest.Samples(t)[0].KeyID)
	e.must(403, e.do("GET", "/api/devices/security/bitlocker/keys/"+a.d.ID+"?reason=mine", e.person(escrow.RoleUser, "alice@example.com"), nil))
}

func TestMaxKeyAge(t *testing.T) {
	e := newEnv(t)
	s := bitlockertest.Samples(t)[0]
	a := newAgent(e, "LT-0042", "alice@example.com")
	a.addVolume("C", "C:", s.Password, s.KeyID)
	a.report()
	e.clock.Advance(100 * 24 * time.Hour)
	if res := e.runJobs(); res.AgeRotations != 0 {
		t.Fatalf("maximum key age is off by default, yet %+v", res)
	}
	e.must(200, e.do("PUT", "/api/settings", e.admin, map[string]any{"maxKeyAge": "90d"}))
	if res := e.runJobs(); res.AgeRotations != 1 {
		t.Fatalf("jobs %+v, want one rotation for an old key", res)
	}
	if res := e.runJobs(); res.AgeRotations != 0 {
		t.Fatalf("a second run requested again: %+v", res)
	}
	cmds := a.commands()
	if len(cmds) != 1 || cmds[0].KeyID != s.KeyID {
		t.Fatalf("commands %+v", cmds)
	}
}
