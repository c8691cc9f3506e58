package store

import (
	"context"
	"database/sql"

	"github.com/keyward/keyward/internal/escrow"
)

// EscrowReport counts the devices in scope by escrow status and lists those that are failed,
// missing escrow, or pending for longer than the grace period. It reads one snapshot.
func (db *DB) EscrowReport(ctx context.Context, scope escrow.Scope) (escrow.EscrowReport, error) {
	rep := escrow.EscrowReport{Counts: map[escrow.EscrowStatus]int{
		escrow.StatusEscrowed: 0, escrow.StatusPending: 0, escrow.StatusFailed: 0, escrow.StatusNotAvailable: 0,
	}}
	err := db.read(ctx, func(tx *sql.Tx) error {
		rep.GeneratedAt = db.Now()
		settings, err := loadSettings(ctx, tx)
		if err != nil {
			return err
		}
		return db.eachDevice(ctx, tx, scope, func(d escrow.DeviceDetail) {
			rep.Total++
			rep.Counts[d.Status.Status]++
			problem := ""
			switch {
			case d.Status.Status == escrow.StatusFailed && d.Status.MissingEscrow:
				problem = escrow.ProblemMissingEscrow
			case d.Status.Status == escrow.StatusFailed:
				problem = escrow.ProblemFailed
			case d.Status.Status == escrow.StatusPending && !d.Status.Since.IsZero() && rep.GeneratedAt.Sub(d.Status.Since) > settings.EscrowGracePeriod:
				problem = escrow.ProblemPendingTooLong
			}
			if problem != "" {
				rep.Problems = append(rep.Problems, escrow.ReportProblem{Device: d.Device, Status: d.Status, Problem: problem})
			}
		})
	})
	return rep, err
}

// eachDevice calls fn for every device in scope, with its status, in name order, a batch at a
// time so that memory stays flat however large the fleet.
func (db *DB) eachDevice(ctx context.Context, tx *sql.Tx, scope escrow.Scope, fn func(escrow.DeviceDetail)) error {
	afterName, afterID := "", ""
	for {
		devices, more, err := db.devicePage(ctx, tx, scope, afterName, afterID, 500)
		if err != nil {
			return err
		}
		details, err := db.withStatus(ctx, tx, devices)
		if err != nil {
			return err
		}
		for _, d := range details {
			fn(d)
		}
		if !more {
			return nil
		}
		last := devices[len(devices)-1]
		afterName, afterID = last.Name, last.ID
	}
}
