package store_test

import (
	"database/sql"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/store"
)

// TestStoredStatusFollowsRules is the property that the stored escrow status is the status the
// rules give: generated fleets go through generated sequences of everything that can move a
// status (enrollment, escrow, reports with every volume state, fingerprints that match and do
// not, failure and recovery events, rotations requested, delivered, completed and failed,
// disclosures, settings changes, retirement, the background jobs) with the clock moved by
// amounts around the grace period and the rotation timeout; after every step each device's
// and volume's stored status, the status filters, the counters, the escrow report and the
// census must agree with the rules applied afresh to the whole state.
func TestStoredStatusFollowsRules(t *testing.T) {
	seeds, steps := []uint64{1, 2, 3}, 250
	if testing.Short() {
		seeds, steps = seeds[:1], 60
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			e := newEnv(t)
			f := &fleet{e: e, raw: e.raw(), rng: rand.New(rand.NewPCG(seed, 7)), next: int(seed) * 100000}
			for step := range steps {
				f.step()
				f.check(step)
			}
		})
	}
}

type fleetDevice struct {
	en      escrow.Enrolled
	lab     bool // tagged "lab": in the scope of a helpdesk limited to that tag
	retired bool
	keys    map[string][]sample // escrowed recovery passwords per volume, oldest first
}

type fleet struct {
	e       *env
	raw     *sql.DB
	rng     *rand.Rand
	devices []*fleetDevice
	next    int
	log     []string
}

var fleetVolumes = []string{osVolume, dataVolume, usbVolume}

func (f *fleet) logf(format string, args ...any) {
	f.log = append(f.log, fmt.Sprintf(format, args...))
}

// allow fails the test for an error whose code is not one the step may meet.
func (f *fleet) allow(what string, err error, codes ...escrow.Code) {
	f.e.t.Helper()
	if err != nil && !slices.Contains(codes, escrow.ErrorCode(err)) {
		f.e.t.Fatalf("%s: %v\nsteps:\n%s", what, err, strings.Join(f.log, "\n"))
	}
}

func (f *fleet) pick() *fleetDevice { return f.devices[f.rng.IntN(len(f.devices))] }

func (f *fleet) sample() sample {
	f.next++
	return genSample(f.next)
}

func (f *fleet) step() {
	e, rng := f.e, f.rng
	op := rng.IntN(100)
	if len(f.devices) == 0 {
		op = 0
	}
	switch {
	case op < 8 && len(f.devices) < 12:
		en := e.enroll(fmt.Sprintf("LT-%04d", len(f.devices)), "owner@example.com")
		d := &fleetDevice{en: en, keys: map[string][]sample{}, lab: rng.IntN(2) == 0}
		if d.lab {
			// No service sets tags yet; the row is what one would write.
			e.exec(f.raw, `INSERT INTO device_tags (device_id, tag) VALUES ($1, 'lab')`, en.DeviceID)
		}
		f.devices = append(f.devices, d)
		f.logf("enroll %s", en.DeviceID)
	case op < 24:
		d, vol, s := f.pick(), fleetVolumes[rng.IntN(len(fleetVolumes))], f.sample()
		_, err := e.db.Escrow(e.ctx, deviceOrigin(d.en), d.en.DeviceID, passwordRequest(vol, s))
		f.allow("escrow", err, escrow.CodeUnauthorized)
		if err == nil {
			d.keys[vol] = append(d.keys[vol], s)
		}
		f.logf("escrow %s on %s: %v", d.en.DeviceID, vol, err)
	case op < 48:
		d := f.pick()
		r := f.report(d)
		_, err := e.db.ApplyReport(e.ctx, deviceOrigin(d.en), d.en.DeviceID, r)
		f.allow("report", err, escrow.CodeUnauthorized)
		f.logf("report %s %+v: %v", d.en.DeviceID, r, err)
	case op < 56:
		d := f.pick()
		vol := ""
		if rng.IntN(2) == 0 {
			vol = fleetVolumes[rng.IntN(len(fleetVolumes))]
		}
		_, err := e.db.RequestRotation(e.ctx, adminOrigin, d.en.DeviceID, vol, asAdmin("test"), allowDevice)
		f.allow("rotate", err, escrow.CodeNotEncrypted, escrow.CodeNotFound)
		f.logf("rotate %s %q: %v", d.en.DeviceID, vol, err)
	case op < 74:
		d := f.pick()
		cmds, err := e.db.Commands(e.ctx, deviceOrigin(d.en), d.en.DeviceID)
		f.allow("commands", err, escrow.CodeUnauthorized)
		f.logf("commands %s: %d, %v", d.en.DeviceID, len(cmds), err)
		if err != nil || len(cmds) == 0 || rng.IntN(3) == 0 {
			return
		}
		c := cmds[rng.IntN(len(cmds))]
		res := escrow.CommandResult{Message: "simulated"}
		if rng.IntN(3) > 0 {
			s := f.sample()
			if c.Type == escrow.CommandReEscrow {
				s.keyID = c.KeyID // the password on the volume, escrowed again
			}
			if _, err := e.db.Escrow(e.ctx, deviceOrigin(d.en), d.en.DeviceID, passwordRequest(c.VolumeID, s)); err == nil {
				d.keys[c.VolumeID] = append(d.keys[c.VolumeID], s)
			} else {
				f.allow("escrow for a command", err, escrow.CodeConflict)
			}
			res = escrow.CommandResult{Completed: true, NewKeyID: s.keyID}
		}
		err = e.db.FinishCommand(e.ctx, deviceOrigin(d.en), d.en.DeviceID, c.ID, res)
		f.allow("finish", err, escrow.CodeConflict, escrow.CodeNotFound, escrow.CodeUnauthorized)
		f.logf("finish %s %s %+v: %v", d.en.DeviceID, c.Type, res, err)
	case op < 78:
		d := f.pick()
		_, err := e.db.Disclose(e.ctx, adminOrigin, d.en.DeviceID, asAdmin("test"), allowAll)
		f.allow("disclose", err)
		f.logf("disclose %s: %v", d.en.DeviceID, err)
	case op < 82:
		durations := []string{"1s", "10m", "1h", "90m", "3h"}
		change := map[string]string{"escrowGracePeriod": durations[rng.IntN(len(durations))]}
		if rng.IntN(2) == 0 {
			change = map[string]string{"rotationTimeout": durations[rng.IntN(len(durations))]}
		}
		_, err := e.db.UpdateSettings(e.ctx, adminOrigin, change)
		f.allow("settings", err)
		f.logf("settings %v: %v", change, err)
	case op < 84:
		d := f.pick()
		_, err := e.db.RetireDevice(e.ctx, adminOrigin, d.en.DeviceID, "test")
		f.allow("retire", err, escrow.CodeConflict)
		d.retired = true
		f.logf("retire %s: %v", d.en.DeviceID, err)
	case op < 90:
		res, err := e.db.RunJobs(e.ctx)
		f.allow("jobs", err)
		f.logf("jobs %+v", res)
	}
	// Mostly small steps, so that devices spend time inside their grace periods and rotation
	// timeouts, and now and then one across them.
	moves := []time.Duration{0, 0, 0, time.Microsecond, time.Second, time.Minute, 5 * time.Minute, 10 * time.Minute,
		30 * time.Minute, 59 * time.Minute, time.Hour, 61 * time.Minute, 3 * time.Hour}
	if d := moves[rng.IntN(len(moves))]; d > 0 {
		e.clock.Advance(d)
		f.logf("clock +%v", d)
	}
}

// report is what the device's agent might send: each volume absent, off, on, encrypting or
// suspended, with a random choice of the escrowed passwords still on it, fingerprints that
// match, do not match or are left out, and now and then an event.
func (f *fleet) report(d *fleetDevice) escrow.Report {
	rng := f.rng
	var r escrow.Report
	for _, id := range fleetVolumes {
		state := rng.IntN(6)
		if state == 0 {
			continue // not listed: an unplugged drive
		}
		v := onVolume(id)
		v.MountPoint = map[string]string{osVolume: "C:", dataVolume: "D:", usbVolume: "E:"}[id]
		switch state {
		case 1:
			v = offVolume(id)
		case 2:
			v.EncryptionStatus = escrow.EncryptionInProgress
		case 3:
			v.ProtectionStatus = escrow.ProtectionOff
		}
		keys := d.keys[id]
		for i, s := range keys {
			if v.ProtectionStatus == escrow.ProtectionOff && v.EncryptionStatus == escrow.FullyDecrypted {
				break
			}
			if i < len(keys)-1 && rng.IntN(3) > 0 {
				continue // an older password the device has removed
			}
			if i == len(keys)-1 && rng.IntN(8) == 0 {
				continue // the newest gone too: missing escrow
			}
			v.Protectors = append(v.Protectors, escrow.Protector{KeyID: s.keyID, Type: escrow.ProtectorRecoveryPassword})
			if v.Fingerprints == nil {
				v.Fingerprints = map[string]string{}
			}
			switch rng.IntN(16) {
			case 0:
				v.Fingerprints[s.keyID] = fingerprint(d.en.VerificationKey, f.sample().password)
			case 1:
			default:
				v.Fingerprints[s.keyID] = fingerprint(d.en.VerificationKey, s.password)
			}
		}
		r.Volumes = append(r.Volumes, v)
		if rng.IntN(12) == 0 {
			types := []string{escrow.EventEscrowFailed, escrow.EventRotationFailed, escrow.EventRecoveryUsed}
			ev := escrow.DeviceEvent{Type: types[rng.IntN(len(types))], VolumeID: id, Message: "simulated", Time: f.e.clock.Now()}
			if len(keys) > 0 {
				ev.KeyID = keys[len(keys)-1].keyID
			}
			r.Events = append(r.Events, ev)
		}
	}
	return r
}

// check holds every stored status to the rules.
func (f *fleet) check(step int) {
	e := f.e
	t := e.t
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("step %d: %s\nsteps:\n%s", step, fmt.Sprintf(format, args...), strings.Join(f.log, "\n"))
	}
	settings, err := e.db.Settings(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	now := e.clock.Now().UTC().Truncate(time.Microsecond)
	want, wantLab := escrow.NewStatusCounts(), escrow.NewStatusCounts()
	byStatus, labByStatus := map[escrow.EscrowStatus][]string{}, map[escrow.EscrowStatus][]string{}
	var problems []string
	computed := map[string]escrow.StatusResult{}
	for _, d := range f.devices {
		detail := e.device(d.en.DeviceID) // the rules, applied afresh to everything stored
		computed[detail.ID] = detail.Status
		st, volumes, err := store.StoredStatus(e.ctx, e.db, d.en.DeviceID)
		if err != nil {
			t.Fatal(err)
		}
		if st != detail.Status.Status {
			fail("device %s: stored %q, the rules give %q (%s)", d.en.DeviceID, st, detail.Status.Status, detail.Status.Why)
		}
		if len(volumes) != len(detail.Volumes) {
			fail("device %s: %d volumes stored, %d volumes", d.en.DeviceID, len(volumes), len(detail.Volumes))
		}
		for _, v := range detail.Volumes {
			if volumes[v.ID] != v.Status.Status {
				fail("device %s volume %s: stored %q, the rules give %q (%s)", d.en.DeviceID, v.ID, volumes[v.ID], v.Status.Status, v.Status.Why)
			}
		}
		if detail.Retired() {
			continue
		}
		want[detail.Status.Status]++
		byStatus[detail.Status.Status] = append(byStatus[detail.Status.Status], detail.ID)
		if d.lab {
			wantLab[detail.Status.Status]++
			labByStatus[detail.Status.Status] = append(labByStatus[detail.Status.Status], detail.ID)
		}
		if escrow.ProblemAt(detail.Status, now, settings.EscrowGracePeriod) != "" {
			problems = append(problems, detail.ID)
		}
	}
	census, err := e.db.Census(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := e.db.EscrowReport(e.ctx, allScope)
	if err != nil {
		t.Fatal(err)
	}
	lab := escrow.Scope{Tags: []string{"lab"}}
	labRep, err := e.db.EscrowReport(e.ctx, lab)
	if err != nil {
		t.Fatal(err)
	}
	list := func(scope escrow.Scope, st escrow.EscrowStatus) []string {
		var listed []string
		cursor := ""
		for {
			page, next, err := e.db.ListDevices(e.ctx, escrow.DeviceFilter{Scope: scope, EscrowStatus: st, Cursor: cursor, Limit: 3})
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range page {
				listed = append(listed, d.ID)
				// What a listing shows is the stored result: the same as the rules, reason and all.
				if c := computed[d.ID]; d.Status.Status != c.Status || d.Status.Why != c.Why || !d.Status.Since.Equal(c.Since) ||
					d.Status.MissingEscrow != c.MissingEscrow {
					fail("device %s listed with %+v, the rules give %+v", d.ID, d.Status, c)
				}
			}
			if next == "" {
				slices.Sort(listed)
				return listed
			}
			cursor = next
		}
	}
	for st, n := range want {
		if census.Devices[st] != n || rep.Counts[st] != n || labRep.Counts[st] != wantLab[st] {
			fail("%s: census %d, report %d (lab %d), the rules %d (lab %d)", st, census.Devices[st], rep.Counts[st], labRep.Counts[st], n, wantLab[st])
		}
		slices.Sort(byStatus[st])
		if listed := list(allScope, st); !slices.Equal(listed, byStatus[st]) {
			fail("devices listed as %s: %v, the rules: %v", st, listed, byStatus[st])
		}
		slices.Sort(labByStatus[st])
		if listed := list(lab, st); !slices.Equal(listed, labByStatus[st]) {
			fail("lab devices listed as %s: %v, the rules: %v", st, listed, labByStatus[st])
		}
	}
	var reported []string
	for _, p := range rep.Problems {
		if c := computed[p.Device.ID]; p.Problem != escrow.ProblemAt(c, now, settings.EscrowGracePeriod) || p.Status.Why != c.Why {
			fail("report lists %s as %q for %+v, the rules give %+v", p.Device.ID, p.Problem, p.Status, c)
		}
		reported = append(reported, p.Device.ID)
	}
	slices.Sort(reported)
	slices.Sort(problems)
	if !slices.Equal(reported, problems) {
		fail("escrow report lists %v, the rules %v", reported, problems)
	}
}

// TestStatusMigrationDerivesExistingRows takes a database back to before the stored status (the
// schema of migration 0010 undone, its record deleted, as for a database where later migrations
// were applied first) and opens it: the migration fills the gap and derives every device's
// status, reason and counters from the rows already there, in its own transaction.
func TestStatusMigrationDerivesExistingRows(t *testing.T) {
	e := newEnv(t)
	devices := seedFleet(t, e, 60)
	e.clock.Advance(2 * time.Hour)
	want, err := e.db.Census(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.db.Close(); err != nil {
		t.Fatal(err)
	}
	raw := e.raw()
	undo := []string{
		`DROP TABLE status_counts`,
		`DELETE FROM schema_migrations WHERE version = 10`,
		// A later migration already recorded, as when it was merged and applied first.
		`INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)`,
		`CREATE INDEX devices_by_name ON devices (name, id)`,
		`DROP INDEX devices_by_owner`,
		`CREATE INDEX devices_by_owner ON devices (owner_key)`,
	}
	if onPostgres() {
		undo = append(undo, `DROP TRIGGER devices_count ON devices`, `DROP TRIGGER recovery_keys_count ON recovery_keys`,
			`DROP FUNCTION count_device_status`, `DROP FUNCTION count_key_status`)
	} else {
		for _, tr := range []string{"devices_count_insert", "devices_count_update", "devices_count_delete",
			"recovery_keys_count_insert", "recovery_keys_count_update", "recovery_keys_count_delete"} {
			undo = append(undo, `DROP TRIGGER `+tr)
		}
	}
	for _, ix := range []string{"devices_in_service", "devices_retired", "devices_by_status", "devices_by_until", "devices_by_recheck",
		"devices_by_listed", "devices_by_name_key", "recovery_keys_escrowed", "recovery_keys_mismatch", "volumes_missing_escrow",
		"rotations_delivered", "recovery_keys_by_age", "audit_events_by_actor_id", "audit_events_by_actor_name",
		"audit_events_by_source", "audit_events_by_outcome", "audit_events_by_time"} {
		undo = append(undo, `DROP INDEX `+ix)
	}
	for _, c := range []string{"escrow_status", "status_since", "status_until", "listed_from", "status_why", "status_missing", "recheck_at", "name_key"} {
		undo = append(undo, `ALTER TABLE devices DROP COLUMN `+c)
	}
	undo = append(undo, `ALTER TABLE volumes DROP COLUMN escrow_status`, `ALTER TABLE volumes DROP COLUMN status_until`)
	for _, q := range undo {
		e.exec(raw, q)
	}

	e.db = e.open()
	got, err := e.db.Census(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("census after the migration %v, before %v", got, want)
	}
	for _, d := range devices {
		st, _, err := store.StoredStatus(e.ctx, e.db, d.DeviceID)
		if err != nil || st != e.status(d.DeviceID) {
			t.Errorf("device %s: stored %q (%v), the rules give %q", d.DeviceID, st, err, e.status(d.DeviceID))
		}
	}
	if page, _, err := e.db.SearchDevices(e.ctx, adminOrigin, escrow.DeviceFilter{Scope: allScope}, "LT-000001"); err != nil || len(page) != 1 {
		t.Errorf("search by name after the migration: %d devices, %v", len(page), err)
	}
}
