package store_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/seal"
	"github.com/keyward/keyward/internal/store"
)

func TestOpenCreatesDatabaseFile(t *testing.T) {
	t.Parallel()
	sqliteOnly(t)
	// A data directory that does not exist yet: first start of `keyward serve`.
	dir := filepath.Join(t.TempDir(), "keyward-data")
	db, err := store.OpenSQLite(t.Context(), dir, store.Options{Sealer: mustSealer(t, mustGenerate(t)), Now: newClock().Now})
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	defer func() {
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	}()
	fi, err := os.Stat(filepath.Join(dir, store.DatabaseFile))
	if err != nil {
		t.Fatalf("database file: %v", err)
	}
	if !fi.Mode().IsRegular() || fi.Size() == 0 {
		t.Errorf("database file: mode %v, size %d", fi.Mode(), fi.Size())
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	// The directory holds key material (sealed) and, by default, the master key file.
	if perm := di.Mode().Perm(); perm&0o077 != 0 {
		t.Errorf("data directory mode %04o, want no access for group and others", perm)
	}
	if err := db.Ping(t.Context()); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func TestReopenAppliesMigrationsOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	en := e.enroll("LT-0042", "")
	e.escrowPassword(en, osVolume, xts128)
	raw := e.raw()
	type migration struct{ version, appliedAt int64 }
	applied := func() []migration {
		rows, err := raw.QueryContext(e.ctx, `SELECT version, applied_at FROM schema_migrations ORDER BY version`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []migration
		for rows.Next() {
			var m migration
			if err := rows.Scan(&m.version, &m.appliedAt); err != nil {
				t.Fatal(err)
			}
			out = append(out, m)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	first := applied()
	if len(first) == 0 || first[0].version != 1 {
		t.Fatalf("migrations after first open: %v", first)
	}
	events, err := e.db.VerifyAudit(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.db.Close(); err != nil {
		t.Fatal(err)
	}

	// A later clock would show up in applied_at if anything ran again.
	for range 2 {
		e.clock.Advance(time.Hour)
		e.db = e.open()
		if got := applied(); !slices.Equal(got, first) {
			t.Fatalf("migrations after reopen: %v, want %v", got, first)
		}
		if n, err := e.db.VerifyAudit(e.ctx); err != nil || n != events {
			t.Fatalf("VerifyAudit after reopen = %d, %v; want %d, nil", n, err, events)
		}
		d := e.disclose(en.DeviceID)
		if len(d.Keys) != 1 || d.Keys[0].Material != xts128.password {
			t.Fatalf("after reopen, disclosure = %+v", d.Keys)
		}
		events = int64(e.countEvents(escrow.AuditFilter{}))
		if err := e.db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	e.db = e.open()
}

func TestOpenPragmas(t *testing.T) {
	t.Parallel()
	sqliteOnly(t)
	e := newEnv(t)
	en := e.enroll("LT-0042", "")
	e.escrowPassword(en, osVolume, xts128)

	raw := e.raw()
	var mode string
	if err := raw.QueryRowContext(e.ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Errorf("journal_mode = %q, want wal", mode)
	}
	// Only a write through the store's pooled connection can have made the WAL file grow.
	fi, err := os.Stat(e.path() + "-wal")
	if err != nil {
		t.Fatalf("WAL file after a write: %v", err)
	}
	if fi.Size() == 0 {
		t.Error("WAL file is empty after a write")
	}

	// foreign_keys is off by default in SQLite, per connection; the store turns it on for
	// every pooled connection, so a key for a device that does not exist cannot be stored.
	var fk int
	if err := raw.QueryRowContext(e.ctx, `PRAGMA foreign_keys`).Scan(&fk); err != nil {
		t.Fatal(err)
	}
	if fk != 0 {
		t.Fatalf("raw handle has foreign_keys = %d; the check below would prove nothing", fk)
	}
	const ghost = "00000000-0000-4000-8000-000000000000"
	if _, err := e.db.Escrow(e.ctx, adminOrigin, ghost, passwordRequest(osVolume, cbc128)); err == nil {
		t.Error("Escrow for a device that does not exist succeeded")
	}
	if keys := e.keys(escrow.KeyFilter{DeviceID: ghost}); len(keys) != 0 {
		t.Errorf("keys stored for a device that does not exist: %+v", keys)
	}
	var volumes int
	if err := raw.QueryRowContext(e.ctx, `SELECT COUNT(*) FROM volumes WHERE device_id = $1`, ghost).Scan(&volumes); err != nil {
		t.Fatal(err)
	}
	if volumes != 0 {
		t.Errorf("%d volumes stored for a device that does not exist", volumes)
	}
}

func TestOpenWrongMasterKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	en := e.enroll("LT-0042", "")
	e.escrowPassword(en, osVolume, xts128)
	if err := e.db.Close(); err != nil {
		t.Fatal(err)
	}

	db, err := e.openWith(mustGenerate(t))
	if err == nil {
		db.Close()
		t.Fatal("opening with another master key succeeded")
	}
	if !errors.Is(err, seal.ErrWrongMasterKey) {
		t.Fatalf("err = %v, want one matching seal.ErrWrongMasterKey", err)
	}

	// The refusal must not have damaged anything: the right key still opens every secret.
	e.db = e.open()
	if d := e.disclose(en.DeviceID); len(d.Keys) != 1 || d.Keys[0].Material != xts128.password {
		t.Fatalf("disclosure with the right key after a refused start: %+v", d.Keys)
	}
}

func TestClosedDatabaseIsUnavailable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	en := e.enroll("LT-0042", "")
	e.escrowPassword(en, osVolume, xts128)
	if err := e.db.Close(); err != nil {
		t.Fatal(err)
	}

	// Each of these must answer "unavailable" (503, nothing acknowledged), never panic and
	// never claim success.
	tests := []struct {
		name string
		call func() error
	}{
		{"Escrow", func() error {
			_, err := e.db.Escrow(e.ctx, deviceOrigin(en), en.DeviceID, passwordRequest(osVolume, cbc128))
			return err
		}},
		{"EscrowSameAgain", func() error {
			_, err := e.db.Escrow(e.ctx, deviceOrigin(en), en.DeviceID, passwordRequest(osVolume, xts128))
			return err
		}},
		{"ApplyReport", func() error {
			_, err := e.db.ApplyReport(e.ctx, deviceOrigin(en), en.DeviceID, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID)}})
			return err
		}},
		{"Disclose", func() error {
			d, err := e.db.Disclose(e.ctx, adminOrigin, en.DeviceID, asAdmin("other"), allowAll)
			if len(d.Keys) != 0 {
				t.Errorf("Disclose on a closed database returned keys")
			}
			return err
		}},
		{"ListKeys", func() error {
			_, _, err := e.db.ListKeys(e.ctx, adminOrigin, escrow.KeyFilter{Scope: allScope, Limit: 10})
			return err
		}},
		{"RequestRotation", func() error {
			_, err := e.db.RequestRotation(e.ctx, adminOrigin, en.DeviceID, "", asAdmin("test"), allowDevice)
			return err
		}},
		{"VerifyAudit", func() error {
			_, err := e.db.VerifyAudit(e.ctx)
			return err
		}},
		{"Ping", func() error { return e.db.Ping(e.ctx) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantCode(t, tt.call(), escrow.CodeUnavailable)
		})
	}
}

// ANALYZE's sqlite_stat4 samples make SQLite compile a kept statement again for each new value
// bound against a sampled column; the store drops them when it opens (and whenever it refreshes
// the statistics), keeping sqlite_stat1.
func TestOpenDropsStat4Samples(t *testing.T) {
	t.Parallel()
	sqliteOnly(t)
	e := newEnv(t)
	for i := range 20 {
		e.escrowPassword(e.enroll(fmt.Sprintf("LT-%04d", i), ""), osVolume, genSample(i))
	}
	raw := e.raw()
	e.exec(raw, `ANALYZE`)
	count := func(table string) int {
		var n int
		if err := raw.QueryRowContext(e.ctx, `SELECT count(*) FROM `+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if count("sqlite_stat4") == 0 {
		t.Fatal("a full ANALYZE wrote no samples: nothing to test")
	}
	db := e.open()
	defer db.Close()
	if n := count("sqlite_stat4"); n != 0 {
		t.Errorf("sqlite_stat4 has %d rows after the store opened, want none", n)
	}
	if count("sqlite_stat1") == 0 {
		t.Error("sqlite_stat1 is gone too")
	}
}

// The jobs refresh the planner's statistics at least hourly, not only after large changes: a
// fleet grows by small writes, and the writer keeps its statements as once planned.
func TestJobsRefreshStatisticsHourly(t *testing.T) {
	t.Parallel()
	sqliteOnly(t)
	e := newEnv(t)
	for i := range 5 {
		e.escrowPassword(e.enroll(fmt.Sprintf("LT-%04d", i), ""), osVolume, genSample(i))
	}
	raw := e.raw()
	stats := func() int {
		var n int
		if err := raw.QueryRowContext(e.ctx, `SELECT count(*) FROM sqlite_stat1 WHERE tbl = 'recovery_keys'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	e.exec(raw, `DELETE FROM sqlite_stat1`)
	if _, err := e.db.RunJobs(e.ctx); err != nil {
		t.Fatal(err)
	}
	if n := stats(); n != 0 {
		t.Fatalf("statistics refreshed within the hour (%d rows): the test cannot tell", n)
	}
	e.clock.Advance(61 * time.Minute)
	if _, err := e.db.RunJobs(e.ctx); err != nil {
		t.Fatal(err)
	}
	if n := stats(); n == 0 {
		t.Error("an hour on, the jobs left the statistics missing")
	}
}
