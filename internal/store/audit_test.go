package store_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/escrow"
)

func TestVerifyAuditFreshLog(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if n, err := e.db.VerifyAudit(e.ctx); n != 0 || err != nil {
		t.Fatalf("VerifyAudit on an empty log = %d, %v; want 0, nil", n, err)
	}
	en := e.enroll("LT-0042", "")
	e.escrowPassword(en, osVolume, xts128)
	e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID)}})
	e.disclose(en.DeviceID)
	events := e.events(escrow.AuditFilter{})
	if len(events) < 5 {
		t.Fatalf("only %d events", len(events))
	}
	n, err := e.db.VerifyAudit(e.ctx)
	if err != nil || n != int64(len(events)) {
		t.Fatalf("VerifyAudit = %d, %v; want %d, nil", n, err, len(events))
	}
	for i, ev := range events {
		if ev.Seq != int64(i+1) || len(ev.Hash) != 32 {
			t.Errorf("event %d: seq %d, %d-byte hash", i, ev.Seq, len(ev.Hash))
		}
	}
}

func TestVerifyAuditDetectsTampering(t *testing.T) {
	t.Parallel()
	// build returns a log of several events and the seq of a key.read event in its middle.
	build := func(e *env) (n, read int64) {
		en := e.enroll("LT-0042", "")
		e.escrowPassword(en, osVolume, xts128)
		e.disclose(en.DeviceID)
		e.escrowPassword(en, dataVolume, cbc128)
		reads := e.events(escrow.AuditFilter{Action: escrow.ActionKeyRead})
		if len(reads) != 1 {
			e.t.Fatalf("key.read events: %+v", reads)
		}
		return int64(e.countEvents(escrow.AuditFilter{})), reads[0].Seq
	}
	tests := []struct {
		name    string
		tamper  func(e *env, n, read int64) (restore func())
		wantSeq func(n, read int64) int64
	}{
		{
			name: "reason edited",
			tamper: func(e *env, n, read int64) func() {
				raw := e.raw()
				var reason string
				if err := raw.QueryRowContext(e.ctx, `SELECT reason FROM audit_events WHERE seq = $1`, read).Scan(&reason); err != nil {
					e.t.Fatal(err)
				}
				e.exec(raw, `UPDATE audit_events SET reason = 'routine check' WHERE seq = $1`, read)
				return func() { e.exec(raw, `UPDATE audit_events SET reason = $1 WHERE seq = $2`, reason, read) }
			},
			wantSeq: func(n, read int64) int64 { return read },
		},
		{
			name: "outcome edited",
			tamper: func(e *env, n, read int64) func() {
				raw := e.raw()
				e.exec(raw, `UPDATE audit_events SET outcome = 'denied' WHERE seq = $1`, read)
				return func() { e.exec(raw, `UPDATE audit_events SET outcome = 'success' WHERE seq = $1`, read) }
			},
			wantSeq: func(n, read int64) int64 { return read },
		},
		{
			name: "first event edited",
			tamper: func(e *env, n, read int64) func() {
				e.exec(e.raw(), `UPDATE audit_events SET actor_name = 'someone else' WHERE seq = 1`)
				return nil
			},
			wantSeq: func(n, read int64) int64 { return 1 },
		},
		{
			name: "last event deleted",
			tamper: func(e *env, n, read int64) func() {
				e.exec(e.raw(), `DELETE FROM audit_events WHERE seq = $1`, n)
				return nil
			},
			wantSeq: func(n, read int64) int64 { return n },
		},
		{
			name: "middle event deleted",
			tamper: func(e *env, n, read int64) func() {
				e.exec(e.raw(), `DELETE FROM audit_events WHERE seq = $1`, read)
				return nil
			},
			wantSeq: func(n, read int64) int64 { return read },
		},
		{
			// Renumbering the rest of the log after a deletion keeps seq contiguous; the hashes
			// still name the gap.
			name: "middle event deleted and the rest renumbered",
			tamper: func(e *env, n, read int64) func() {
				raw := e.raw()
				e.exec(raw, `DELETE FROM audit_events WHERE seq = $1`, read)
				e.exec(raw, `UPDATE audit_events SET seq = -(seq - 1) WHERE seq > $1`, read)
				e.exec(raw, `UPDATE audit_events SET seq = -seq WHERE seq < 0`)
				e.exec(raw, `UPDATE audit_head SET seq = seq - 1`)
				return nil
			},
			wantSeq: func(n, read int64) int64 { return read },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			n, read := build(e)
			if read <= 1 || read >= n {
				t.Fatalf("key.read at seq %d of %d is not in the middle", read, n)
			}
			if got, err := e.db.VerifyAudit(e.ctx); err != nil || got != n {
				t.Fatalf("VerifyAudit before tampering = %d, %v", got, err)
			}
			restore := tt.tamper(e, n, read)

			checked, err := e.db.VerifyAudit(e.ctx)
			var broken *audit.BrokenError
			if !errors.As(err, &broken) {
				t.Fatalf("VerifyAudit after tampering = %d, %v; want an *audit.BrokenError", checked, err)
			}
			if want := tt.wantSeq(n, read); broken.Seq != want || checked != want-1 {
				t.Errorf("broken at seq %d after %d checked, want seq %d after %d (%v)", broken.Seq, checked, want, want-1, err)
			}

			if restore != nil {
				restore()
				if got, err := e.db.VerifyAudit(e.ctx); err != nil || got != n {
					t.Errorf("VerifyAudit after restoring = %d, %v; want %d, nil", got, err, n)
				}
			}
		})
	}
}

func TestConcurrentEscrow(t *testing.T) {
	t.Parallel()
	const workers, perWorker = 8, 20
	e := newEnv(t)
	var devices []escrow.Enrolled
	for i := range 4 {
		devices = append(devices, e.enroll(fmt.Sprintf("LT-%04d", i), ""))
	}
	before := e.countEvents(escrow.AuditFilter{})

	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				n := w*perWorker + i
				en := devices[n%len(devices)]
				created, err := e.db.Escrow(e.ctx, deviceOrigin(en), en.DeviceID, passwordRequest(osVolume, genSample(n)))
				if err == nil && !created {
					err = fmt.Errorf("key %d: created = false", n)
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Escrow: %v", err)
	}

	events := e.events(escrow.AuditFilter{})
	if got := len(events) - before; got != workers*perWorker {
		t.Errorf("%d events from %d escrows", got, workers*perWorker)
	}
	seqs := make([]int64, len(events))
	for i, ev := range events {
		seqs[i] = ev.Seq
	}
	slices.Sort(seqs)
	for i, s := range seqs {
		if s != int64(i+1) {
			t.Fatalf("seq numbers are not 1..%d: position %d holds %d", len(seqs), i, s)
		}
	}
	if n, err := e.db.VerifyAudit(e.ctx); err != nil || n != int64(len(events)) {
		t.Errorf("VerifyAudit = %d, %v; want %d, nil", n, err, len(events))
	}
	if keys := e.keys(escrow.KeyFilter{}); len(keys) != workers*perWorker {
		t.Errorf("%d keys stored, want %d", len(keys), workers*perWorker)
	}
}
