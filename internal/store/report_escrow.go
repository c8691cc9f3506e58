package store

import (
	"context"
	"database/sql"

	"github.com/keyward/keyward/internal/escrow"
)

// EscrowReport counts the devices in service in scope by escrow status and lists those that are failed,
// missing escrow, or pending for longer than the grace period. It reads one snapshot.
func (db *DB) EscrowReport(ctx context.Context, scope escrow.Scope) (escrow.EscrowReport, error) {
	rep := escrow.EscrowReport{Counts: escrow.NewStatusCounts()}
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

// Census counts every device in service by escrow status and every key by status, in one snapshot. It
// walks the devices as the escrow report does (the status rules run in Go), so callers that
// ask often, like the metrics, must cache it.
func (db *DB) Census(ctx context.Context) (escrow.Census, error) {
	c := escrow.Census{Devices: escrow.NewStatusCounts(),
		Keys: map[escrow.KeyStatus]int{escrow.KeyActive: 0, escrow.KeySuperseded: 0, escrow.KeyPurged: 0}}
	err := db.read(ctx, func(tx *sql.Tx) error {
		if err := db.eachDevice(ctx, tx, escrow.Scope{All: true}, func(d escrow.DeviceDetail) {
			c.Devices[d.Status.Status]++
		}); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT status, COUNT(*) FROM recovery_keys GROUP BY status`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var st escrow.KeyStatus
			var n int
			if err := rows.Scan(&st, &n); err != nil {
				return err
			}
			c.Keys[st] = n
		}
		return rows.Err()
	})
	if err != nil {
		return escrow.Census{}, err
	}
	return c, nil
}

// eachDevice calls fn for every device in service in scope, with its status, in name order, a batch at a
// time so that memory stays flat however large the fleet.
func (db *DB) eachDevice(ctx context.Context, tx *sql.Tx, scope escrow.Scope, fn func(escrow.DeviceDetail)) error {
	afterName, afterID := "", ""
	for {
		devices, more, err := db.devicePage(ctx, tx, scope, false, afterName, afterID, 500)
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
