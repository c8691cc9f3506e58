package store_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/escrow"
)

func TestListKeysMetadataOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	en := e.enroll("LT-0042", "")
	samples := []sample{xts128, cbc128, togo}
	for i, s := range samples {
		e.escrowPassword(en, []string{osVolume, dataVolume, usbVolume}[i], s)
	}
	keys := e.keys(escrow.KeyFilter{})
	b, err := json.Marshal(keys)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range samples {
		if !strings.Contains(string(b), s.keyID) {
			t.Fatalf("listing lacks key %s; the check below would prove nothing", s.keyID)
		}
		if containsSecret(b, s.password) {
			t.Errorf("listing carries the recovery password of %s", s.keyID)
		}
	}
}

// listFixture is two owners' devices with keys of every volume type and both statuses.
type listFixture struct {
	alice, bob escrow.Enrolled
	sibling    sample // shares its first 8 characters with xts128
}

func newListFixture(e *env) listFixture {
	f := listFixture{
		alice:   e.enroll("LT-ALICE", "alice@example.com"),
		bob:     e.enroll("LT-BOB", "bob@example.com"),
		sibling: sample{"64311DEA-0000-4000-8000-000000000001", genSample(1).password},
	}
	e.escrowPassword(f.alice, osVolume, xts128)
	data := passwordRequest(dataVolume, f.sibling)
	data.MountPoint, data.VolumeType = "D:", escrow.VolumeFixedData
	if _, err := e.db.Escrow(e.ctx, deviceOrigin(f.alice), f.alice.DeviceID, data); err != nil {
		e.t.Fatal(err)
	}
	usb := passwordRequest(usbVolume, togo)
	usb.MountPoint, usb.VolumeType = "E:", escrow.VolumeRemovable
	if _, err := e.db.Escrow(e.ctx, deviceOrigin(f.bob), f.bob.DeviceID, usb); err != nil {
		e.t.Fatal(err)
	}
	e.escrowPassword(f.bob, osVolume, cbc128)
	// Bob's report no longer lists cbc128: it becomes superseded.
	usbReported := onVolume(usbVolume, togo.keyID)
	usbReported.MountPoint, usbReported.Type = "E:", escrow.VolumeRemovable
	e.report(f.bob, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume), usbReported}})
	return f
}

func TestListKeysFilters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := newListFixture(e)
	a, b := f.alice.DeviceID, f.bob.DeviceID
	tests := []struct {
		name   string
		filter escrow.KeyFilter
		want   []string // device/key
	}{
		{"everything", escrow.KeyFilter{}, []string{a + "/" + xts128.keyID, a + "/" + f.sibling.keyID, b + "/" + togo.keyID, b + "/" + cbc128.keyID}},
		{"deviceId", escrow.KeyFilter{DeviceID: a}, []string{a + "/" + xts128.keyID, a + "/" + f.sibling.keyID}},
		{"unknown deviceId", escrow.KeyFilter{DeviceID: "00000000-0000-4000-8000-000000000000"}, nil},
		{"keyId first 8 characters", escrow.KeyFilter{KeyIDPrefix: "64311DEA"}, []string{a + "/" + xts128.keyID, a + "/" + f.sibling.keyID}},
		{"keyId 9 characters", escrow.KeyFilter{KeyIDPrefix: "64311DEA-4"}, []string{a + "/" + xts128.keyID}},
		{"whole keyId", escrow.KeyFilter{KeyIDPrefix: xts128.keyID}, []string{a + "/" + xts128.keyID}},
		{"keyId matching nothing", escrow.KeyFilter{KeyIDPrefix: "64311DEB"}, nil},
		{"volumeType removable", escrow.KeyFilter{VolumeType: escrow.VolumeRemovable}, []string{b + "/" + togo.keyID}},
		{"volumeType fixedData", escrow.KeyFilter{VolumeType: escrow.VolumeFixedData}, []string{a + "/" + f.sibling.keyID}},
		{"volumeType operatingSystem", escrow.KeyFilter{VolumeType: escrow.VolumeOperatingSystem}, []string{a + "/" + xts128.keyID, b + "/" + cbc128.keyID}},
		{"status superseded", escrow.KeyFilter{Status: escrow.KeySuperseded}, []string{b + "/" + cbc128.keyID}},
		{"status active", escrow.KeyFilter{Status: escrow.KeyActive}, []string{a + "/" + xts128.keyID, a + "/" + f.sibling.keyID, b + "/" + togo.keyID}},
		{"status purged", escrow.KeyFilter{Status: escrow.KeyPurged}, nil},
		{"deviceId and status", escrow.KeyFilter{DeviceID: b, Status: escrow.KeyActive}, []string{b + "/" + togo.keyID}},
		{"prefix and volumeType", escrow.KeyFilter{KeyIDPrefix: "64311DEA", VolumeType: escrow.VolumeOperatingSystem}, []string{a + "/" + xts128.keyID}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := e.in(t)
			before := e.countEvents(escrow.AuditFilter{Action: escrow.ActionKeyList})
			tt.filter.Scope, tt.filter.Limit = allScope, 100
			keys, next, err := e.db.ListKeys(e.ctx, adminOrigin, tt.filter)
			if err != nil {
				t.Fatal(err)
			}
			if next != "" {
				t.Errorf("next cursor %q on a short listing", next)
			}
			got := make([]string, len(keys))
			for i, k := range keys {
				got[i] = k.DeviceID + "/" + k.KeyID
			}
			slices.Sort(got)
			want := slices.Clone(tt.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("keys = %v, want %v", got, want)
			}

			ev := e.events(escrow.AuditFilter{Action: escrow.ActionKeyList})
			if len(ev) != before+1 {
				t.Fatalf("%d key.list events written, want 1", len(ev)-before)
			}
			last := ev[len(ev)-1]
			if last.DeviceID != tt.filter.DeviceID || last.Actor != adminOrigin.Actor || last.Outcome != escrow.OutcomeSuccess {
				t.Errorf("key.list event = %+v", last)
			}
			if len(tt.filter.KeyIDPrefix) == 36 && last.KeyID != tt.filter.KeyIDPrefix {
				t.Errorf("key.list event for a whole key ID has keyId %q", last.KeyID)
			}
		})
	}
}

func TestListKeysScope(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	f := newListFixture(e)
	tests := []struct {
		name  string
		scope escrow.Scope
		want  []string // device IDs, one per key
	}{
		{"all", allScope, []string{f.alice.DeviceID, f.alice.DeviceID, f.bob.DeviceID, f.bob.DeviceID}},
		{"owner", escrow.Scope{OwnerUPN: "alice@example.com"}, []string{f.alice.DeviceID, f.alice.DeviceID}},
		// Sign-in names compare without case (SPEC §5).
		{"owner in other case", escrow.Scope{OwnerUPN: "BOB@Example.COM"}, []string{f.bob.DeviceID, f.bob.DeviceID}},
		{"owner of nothing", escrow.Scope{OwnerUPN: "mallory@example.com"}, nil},
		{"tags nobody carries", escrow.Scope{Tags: []string{"finance"}}, nil},
		{"zero scope", escrow.Scope{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := e.in(t)
			before := e.countEvents(escrow.AuditFilter{Action: escrow.ActionKeyList})
			keys, _, err := e.db.ListKeys(e.ctx, adminOrigin, escrow.KeyFilter{Scope: tt.scope, Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, k := range keys {
				got = append(got, k.DeviceID)
			}
			slices.Sort(got)
			want := slices.Clone(tt.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("devices of listed keys = %v, want %v", got, want)
			}
			// A listing that finds nothing is still a listing, and still audited.
			if n := e.countEvents(escrow.AuditFilter{Action: escrow.ActionKeyList}) - before; n != 1 {
				t.Errorf("%d key.list events, want 1", n)
			}
		})
	}
}

func TestListKeysPagination(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		keys  int
		limit int
		pages []int
	}{
		{"10 keys by 3", 10, 3, []int{3, 3, 3, 1}},
		{"9 keys by 3", 9, 3, []int{3, 3, 3}},
		{"2 keys by 1", 2, 1, []int{1, 1}},
		{"2 keys by 100", 2, 100, []int{2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			devices := []escrow.Enrolled{e.enroll("LT-0042", ""), e.enroll("LT-0043", "")}
			want := map[string]bool{}
			for i := range tt.keys {
				s := genSample(i)
				e.escrowPassword(devices[i%2], osVolume, s)
				want[s.keyID] = true
			}
			before := e.countEvents(escrow.AuditFilter{Action: escrow.ActionKeyList})

			seen := map[string]int{}
			var pages []int
			cursor := ""
			for {
				keys, next, err := e.db.ListKeys(e.ctx, adminOrigin, escrow.KeyFilter{Scope: allScope, Limit: tt.limit, Cursor: cursor})
				if err != nil {
					t.Fatal(err)
				}
				pages = append(pages, len(keys))
				for _, k := range keys {
					seen[k.KeyID]++
				}
				if next == "" {
					break
				}
				if len(pages) > tt.keys+1 {
					t.Fatalf("pagination does not end: pages %v", pages)
				}
				cursor = next
			}
			if !slices.Equal(pages, tt.pages) {
				t.Errorf("page sizes %v, want %v", pages, tt.pages)
			}
			for id := range want {
				if seen[id] != 1 {
					t.Errorf("key %s listed %d times, want once", id, seen[id])
				}
			}
			if len(seen) != len(want) {
				t.Errorf("listed %d distinct keys, want %d", len(seen), len(want))
			}
			if n := e.countEvents(escrow.AuditFilter{Action: escrow.ActionKeyList}) - before; n != len(pages) {
				t.Errorf("%d key.list events for %d calls", n, len(pages))
			}
		})
	}
}

func TestListKeysRejectsForeignCursor(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	en := e.enroll("LT-0042", "")
	e.escrowPassword(en, osVolume, xts128)
	for _, cursor := range []string{"not base64!", "MQBSAA", "' OR 1=1 --"} {
		t.Run(cursor, func(t *testing.T) {
			e := e.in(t)
			before := e.countEvents(escrow.AuditFilter{})
			_, _, err := e.db.ListKeys(e.ctx, adminOrigin, escrow.KeyFilter{Scope: allScope, Limit: 10, Cursor: cursor})
			wantCode(t, err, escrow.CodeInvalid)
			if n := e.countEvents(escrow.AuditFilter{}) - before; n != 0 {
				t.Errorf("%d events written for a refused listing", n)
			}
		})
	}
}

// A caller that forgets the limit (the API checks it, the portal and CLI may not) must get an
// answer or a refusal, not a crashed request holding a read transaction open.
func TestListWithoutLimitDoesNotPanic(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	en := e.enroll("LT-0042", "")
	e.escrowPassword(en, osVolume, xts128)
	calls := []struct {
		name string
		call func() (int, error)
	}{
		{"ListKeys", func() (int, error) {
			keys, _, err := e.db.ListKeys(e.ctx, adminOrigin, escrow.KeyFilter{Scope: allScope})
			return len(keys), err
		}},
		{"ListDevices", func() (int, error) {
			devices, _, err := e.db.ListDevices(e.ctx, escrow.DeviceFilter{Scope: allScope})
			return len(devices), err
		}},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			var n int
			var err error
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("panic: %v", r)
					}
				}()
				n, err = c.call()
			}()
			if err != nil {
				wantCode(t, err, escrow.CodeInvalid)
			} else if n == 0 {
				t.Error("no error and no items: a client paging on would never see the key")
			}
		})
	}
}
