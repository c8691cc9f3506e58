package store_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// BenchmarkFleet times what a request costs on a fleet seeded through the store (seedFleet:
// real sealed keys, reports, failures), so that a page can be seen not to grow with the fleet.
// KEYWARD_BENCH_DEVICES sets the size (default 10000); KEYWARD_BENCH_DIR keeps the seeded
// SQLite database there and reuses it on the next run of the same size, because seeding
// through the store commits every escrow and report on its own (about 8 ms a device on a
// quiet machine). With KEYWARD_TEST_STORE=postgres it runs on PostgreSQL, seeded each time.
//
//	KEYWARD_BENCH_DEVICES=10000 KEYWARD_BENCH_DIR=/tmp/kwbench go test -run '^$' -bench BenchmarkFleet -benchtime 2s ./internal/store/
func BenchmarkFleet(b *testing.B) {
	n := 10000
	if v := os.Getenv("KEYWARD_BENCH_DEVICES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 100 {
			b.Fatalf("KEYWARD_BENCH_DEVICES=%q: want a number of at least 100", v)
		}
	}
	e, devices := benchFleet(b, n)
	ctx := e.ctx
	// What the server's jobs do within 30 s of the clock moving: statuses that ran out settled.
	if _, err := e.db.RunJobs(ctx); err != nil {
		b.Fatal(err)
	}
	ok := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	i := 0
	nextDevice := func() string { i++; return devices[(i*7919)%len(devices)] }
	b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
		b.Run("list-page", func(b *testing.B) {
			for b.Loop() {
				_, _, err := e.db.ListDevices(ctx, escrow.DeviceFilter{Scope: allScope, Limit: 100})
				ok(err)
			}
		})
		for _, st := range []escrow.EscrowStatus{escrow.StatusFailed, escrow.StatusPending} {
			b.Run("list-"+string(st), func(b *testing.B) {
				for b.Loop() {
					_, _, err := e.db.ListDevices(ctx, escrow.DeviceFilter{Scope: allScope, EscrowStatus: st, Limit: 100})
					ok(err)
				}
			})
		}
		b.Run("list-tag-scope", func(b *testing.B) {
			for b.Loop() {
				_, _, err := e.db.ListDevices(ctx, escrow.DeviceFilter{Scope: escrow.Scope{Tags: []string{"site-3"}}, Limit: 100})
				ok(err)
			}
		})
		b.Run("device", func(b *testing.B) {
			for b.Loop() {
				_, err := e.db.GetDevice(ctx, adminPrincipal, nextDevice())
				ok(err)
			}
		})
		b.Run("view", func(b *testing.B) {
			for b.Loop() {
				_, err := e.db.Disclose(ctx, adminOrigin, nextDevice(), asAdmin("benchmark"), allowAll)
				ok(err)
			}
		})
		b.Run("key-id-lookup", func(b *testing.B) {
			for b.Loop() {
				_, _, err := e.db.ListKeys(ctx, adminOrigin, escrow.KeyFilter{Scope: allScope, KeyIDPrefix: genSample(2 * (i % n)).keyID[:8], Limit: 100})
				i++
				ok(err)
			}
		})
		b.Run("audit-page", func(b *testing.B) {
			for b.Loop() {
				ok(e.db.ListAudit(ctx, escrow.AuditFilter{Limit: 100}, func(escrow.AuditEvent) error { return nil }))
			}
		})
		b.Run("audit-page-denied", func(b *testing.B) {
			for b.Loop() {
				ok(e.db.ListAudit(ctx, escrow.AuditFilter{Outcome: string(escrow.OutcomeDenied), Limit: 100}, func(escrow.AuditEvent) error { return nil }))
			}
		})
		b.Run("portal-search", func(b *testing.B) {
			for b.Loop() {
				_, _, err := e.db.SearchDevices(ctx, adminOrigin, escrow.DeviceFilter{Scope: allScope, Limit: 50}, fmt.Sprintf("lt-%04d", i%(n/100)))
				i++
				ok(err)
			}
		})
		b.Run("report-summary", func(b *testing.B) {
			for b.Loop() {
				_, err := e.db.StreamEscrowReport(ctx, allScope, escrow.ReportPage{Limit: 1}, nil, func(escrow.ReportProblem) error { return nil })
				ok(err)
			}
		})
		b.Run("report-full", func(b *testing.B) {
			listed := 0
			for b.Loop() {
				listed = 0
				_, err := e.db.StreamEscrowReport(ctx, allScope, escrow.ReportPage{}, nil, func(escrow.ReportProblem) error { listed++; return nil })
				ok(err)
			}
			b.ReportMetric(float64(listed), "devices/report")
			b.ReportMetric(float64(listed)*float64(b.N)/b.Elapsed().Seconds(), "devices/s")
		})
		b.Run("census", func(b *testing.B) {
			for b.Loop() {
				_, err := e.db.Census(ctx)
				ok(err)
			}
		})
	})
}

// benchFleet returns a store holding a seeded fleet of n devices and their IDs, two hours after
// the seeding, so that missing escrow has become failed.
func benchFleet(b *testing.B, n int) (*env, []string) {
	b.Helper()
	cache := os.Getenv("KEYWARD_BENCH_DIR")
	if cache == "" || onPostgres() {
		e := newEnv(b)
		ids := enrolledIDs(seedFleet(b, e, n))
		e.clock.Advance(2 * time.Hour)
		return e, ids
	}
	dir := filepath.Join(cache, fmt.Sprintf("sqlite-%d", n))
	e := &env{t: b, ctx: b.Context(), dir: dir, clock: newClock()}
	master, err := os.ReadFile(filepath.Join(dir, "master.key"))
	if errors.Is(err, os.ErrNotExist) {
		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			b.Fatal(err)
		}
		e.master = mustGenerate(b)
		e.db = e.open()
		ids := enrolledIDs(seedFleet(b, e, n))
		// Written last: its presence says the seeding finished.
		if err := os.WriteFile(filepath.Join(dir, "master.key"), e.master, 0o600); err != nil {
			b.Fatal(err)
		}
		e.clock.Advance(2 * time.Hour)
		return e, ids
	}
	if err != nil {
		b.Fatal(err)
	}
	e.master = master
	e.clock.Advance(2 * time.Hour)
	e.db = e.open()
	var ids []string
	cursor := ""
	for {
		page, next, err := e.db.ListDevices(e.ctx, escrow.DeviceFilter{Scope: allScope, Limit: 1000, Cursor: cursor})
		if err != nil {
			b.Fatal(err)
		}
		for _, d := range page {
			ids = append(ids, d.ID)
		}
		if next == "" {
			return e, ids
		}
		cursor = next
	}
}

func enrolledIDs(devices []escrow.Enrolled) []string {
	ids := make([]string, len(devices))
	for i, d := range devices {
		ids[i] = d.DeviceID
	}
	return ids
}
