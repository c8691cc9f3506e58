package store_test

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/store"
)

// holdNextCommit makes the next write batch wait just before its commit until release is
// called; entered is closed when it starts waiting.
func holdNextCommit(t *testing.T, db *store.DB) (entered <-chan struct{}, release func()) {
	t.Helper()
	in, out := make(chan struct{}), make(chan struct{})
	var once sync.Once
	store.SetBeforeCommit(db, func(*sql.Tx) {
		once.Do(func() {
			close(in)
			<-out
		})
	})
	var released sync.Once
	release = func() { released.Do(func() { close(out) }) }
	t.Cleanup(release)
	return in, release
}

// waitQueued waits until n write requests wait for a batch.
func waitQueued(t *testing.T, db *store.DB, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for store.QueuedWrites(db) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d write requests queued after 20 s, want %d", store.QueuedWrites(db), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func marker(detail string) escrow.AuditEvent {
	e := adminOrigin.Event(escrow.ActionKeyList, escrow.OutcomeSuccess)
	e.Detail = detail
	return e
}

// details returns the details of the audit events in seq order.
func (e *env) details() []string {
	events := e.events(escrow.AuditFilter{})
	slices.SortFunc(events, func(a, b escrow.AuditEvent) int { return cmp.Compare(a.Seq, b.Seq) })
	out := make([]string, len(events))
	for i, ev := range events {
		out[i] = ev.Detail
	}
	return out
}

func TestGroupCommitSharesOneCommitAmongWaitingWrites(t *testing.T) {
	t.Parallel()
	const n = 24
	e := newEnv(t)
	commits0, writes0 := e.db.WriteCounts()
	entered, release := holdNextCommit(t, e.db)

	var answered atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	record := func(i int) {
		wg.Go(func() {
			if err := e.db.Record(e.ctx, marker(fmt.Sprintf("write %d", i))); err != nil {
				errs <- err
			}
			answered.Add(1)
		})
	}
	record(0)
	<-entered // the first write is in its own batch, held before its commit
	for i := 1; i < n; i++ {
		record(i)
	}
	waitQueued(t, e.db, n-1)

	// Nothing is answered before its commit; and reads do not wait for the writer.
	if got := answered.Load(); got != 0 {
		t.Fatalf("%d writes answered before their batch committed", got)
	}
	ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
	defer cancel()
	if _, err := e.db.Settings(ctx); err != nil {
		t.Errorf("Settings while a batch is open: %v", err)
	}
	if err := e.db.ListAudit(ctx, escrow.AuditFilter{Limit: 10}, func(escrow.AuditEvent) error { return nil }); err != nil {
		t.Errorf("ListAudit while a batch is open: %v", err)
	}
	if got := answered.Load(); got != 0 {
		t.Fatalf("%d writes answered before their batch committed", got)
	}

	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Record: %v", err)
	}
	commits1, writes1 := e.db.WriteCounts()
	if commits, writes := commits1-commits0, writes1-writes0; commits != 2 || writes != n {
		t.Errorf("%d commits for %d acknowledged writes, want 2 for %d (the held one, then all that waited)", commits, writes, n)
	}
	got := e.details()
	if len(got) != n {
		t.Fatalf("%d events, want %d", len(got), n)
	}
	if got[0] != "write 0" {
		t.Errorf("first event %q, want the held write's", got[0])
	}
	if checked, err := e.db.VerifyAudit(e.ctx); err != nil || checked != n {
		t.Errorf("VerifyAudit = %d, %v; want %d, nil", checked, err, n)
	}
}

// TestGroupCommitRollsBackOnlyTheFailingRequest puts failing requests between good ones in one
// batch: each failure undoes its own work and its audit event, and the others commit with a
// chain that has no gap.
func TestGroupCommitRollsBackOnlyTheFailingRequest(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	entered, release := holdNextCommit(t, e.db)

	errSvc := escrow.Errorf(escrow.CodeConflict, "refused by the service")
	type request struct {
		name string
		fn   func(ctx context.Context, tx *sql.Tx) error
		code escrow.Code // "" for success
	}
	appendAnd := func(name string, then func(ctx context.Context, tx *sql.Tx) error) func(ctx context.Context, tx *sql.Tx) error {
		return func(ctx context.Context, tx *sql.Tx) error {
			if err := store.AppendEvent(e.db, ctx, tx, marker(name)); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO settings (name, value) VALUES ($1, 'x')`, name); err != nil {
				return err
			}
			return then(ctx, tx)
		}
	}
	ok := func(context.Context, *sql.Tx) error { return nil }
	requests := []request{
		{"first", appendAnd("first", ok), ""},
		// A database error: on PostgreSQL it aborts the transaction until the savepoint's rollback.
		{"database error", appendAnd("database error", func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO settings (name, value) VALUES ('first', 'again')`)
			if err == nil {
				return errors.New("duplicate setting accepted")
			}
			return err
		}), escrow.CodeUnavailable},
		{"service error", appendAnd("service error", func(context.Context, *sql.Tx) error { return errSvc }), escrow.CodeConflict},
		{"panic", appendAnd("panic", func(context.Context, *sql.Tx) error { panic("request panicked") }), "panic"},
		{"last", appendAnd("last", ok), ""},
	}

	var wg sync.WaitGroup
	wg.Go(func() {
		if err := e.db.Record(e.ctx, marker("held")); err != nil {
			t.Errorf("Record: %v", err)
		}
	})
	<-entered
	for i, r := range requests {
		wg.Go(func() {
			defer func() {
				p := recover()
				if (p != nil) != (r.code == "panic") || (p != nil && p != "request panicked") {
					t.Errorf("%s: panic %v in the caller's goroutine", r.name, p)
				}
			}()
			err := store.Write(e.db, e.ctx, func(tx *sql.Tx) error { return r.fn(e.ctx, tx) })
			if code := escrow.ErrorCode(err); (err == nil) != (r.code == "") || err != nil && code != r.code {
				t.Errorf("%s: error %v, want code %q", r.name, err, r.code)
			}
		})
		waitQueued(t, e.db, i+1) // queued in this order, so they run in it
	}
	release()
	wg.Wait()

	if got, want := e.details(), []string{"held", "first", "last"}; !slices.Equal(got, want) {
		t.Errorf("audit events %q, want %q", got, want)
	}
	if checked, err := e.db.VerifyAudit(e.ctx); err != nil || checked != 3 {
		t.Errorf("VerifyAudit = %d, %v; want 3, nil", checked, err)
	}
	var names []string
	rows, err := e.raw().QueryContext(e.ctx, `SELECT name FROM settings ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	if want := []string{"first", "last"}; !slices.Equal(names, want) {
		t.Errorf("settings rows %q, want %q: a failed request's writes survived", names, want)
	}
}

// TestGroupCommitFailedCommitFailsTheBatch makes a batch's commit itself fail (a deferred
// foreign key, checked only at COMMIT): every request of the batch gets 503, none of their
// events is kept, and the next write works.
func TestGroupCommitFailedCommitFailsTheBatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	entered, release := holdNextCommit(t, e.db)
	commits0, writes0 := e.db.WriteCounts()

	var wg sync.WaitGroup
	wg.Go(func() {
		if err := e.db.Record(e.ctx, marker("held")); err != nil {
			t.Errorf("Record: %v", err)
		}
	})
	<-entered
	results := make([]error, 3)
	wg.Go(func() { results[0] = e.db.Record(e.ctx, marker("before")) })
	waitQueued(t, e.db, 1)
	wg.Go(func() {
		results[1] = store.Write(e.db, e.ctx, func(tx *sql.Tx) error {
			for _, q := range []string{
				`CREATE TEMPORARY TABLE commit_parent (id INTEGER PRIMARY KEY)`,
				`CREATE TEMPORARY TABLE commit_child (parent INTEGER REFERENCES commit_parent (id) DEFERRABLE INITIALLY DEFERRED)`,
				`INSERT INTO commit_child (parent) VALUES (1)`,
			} {
				if _, err := tx.ExecContext(e.ctx, q); err != nil {
					return err
				}
			}
			return nil
		})
	})
	waitQueued(t, e.db, 2)
	wg.Go(func() { results[2] = e.db.Record(e.ctx, marker("after")) })
	waitQueued(t, e.db, 3)
	release()
	wg.Wait()

	for i, err := range results {
		if escrow.ErrorCode(err) != escrow.CodeUnavailable {
			t.Errorf("request %d of the failed batch: %v, want unavailable", i, err)
		}
	}
	if err := e.db.Record(e.ctx, marker("next")); err != nil {
		t.Fatalf("write after a failed commit: %v", err)
	}
	if got, want := e.details(), []string{"held", "next"}; !slices.Equal(got, want) {
		t.Errorf("audit events %q, want %q", got, want)
	}
	if checked, err := e.db.VerifyAudit(e.ctx); err != nil || checked != 2 {
		t.Errorf("VerifyAudit = %d, %v; want 2, nil", checked, err)
	}
	commits1, writes1 := e.db.WriteCounts()
	if commits, writes := commits1-commits0, writes1-writes0; commits != 2 || writes != 2 {
		t.Errorf("%d commits, %d acknowledged writes; want 2 and 2", commits, writes)
	}
}

// TestWriteCancelledWhileQueued: a request whose caller gave up before its turn does nothing.
func TestWriteCancelledWhileQueued(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	entered, release := holdNextCommit(t, e.db)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := e.db.Record(e.ctx, marker("held")); err != nil {
			t.Errorf("Record: %v", err)
		}
	})
	<-entered
	ctx, cancel := context.WithCancel(e.ctx)
	var err error
	wg.Go(func() { err = e.db.Record(ctx, marker("cancelled")) })
	waitQueued(t, e.db, 1)
	cancel()
	release()
	wg.Wait()
	if escrow.ErrorCode(err) != escrow.CodeUnavailable {
		t.Errorf("cancelled request: %v, want unavailable", err)
	}
	if got, want := e.details(), []string{"held"}; !slices.Equal(got, want) {
		t.Errorf("audit events %q, want %q", got, want)
	}
}

// BenchmarkConcurrentRecord appends audit events from 32 goroutines, as concurrent requests
// do, and reports how many commits each write cost.
func BenchmarkConcurrentRecord(b *testing.B) {
	url := ""
	if onPostgres() {
		url = pgSchema(b)
	}
	db, err := store.Open(b.Context(), url, b.TempDir(), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	commits0, writes0 := db.WriteCounts()
	b.SetParallelism(16) // 32 clients on two cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := db.Record(b.Context(), marker("benchmark")); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	commits1, writes1 := db.WriteCounts()
	b.ReportMetric(float64(commits1-commits0)/float64(writes1-writes0), "commits/write")
}
