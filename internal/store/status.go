package store

import (
	"context"
	"database/sql"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// Escrow status is kept, not recomputed: every transaction that can move a device's or a
// volume's status (SPEC §3) ends by calling refreshDeviceStatus for the device, which applies
// the rules of internal/escrow to what the transaction holds and stores the result. A pending
// status also stores Until, the instant at which the rules make it failed by itself (a grace
// period or a rotation timeout running out), so that a query at any time reads the exact
// status without a job having run: a pending row with status_until <= now is failed
// (statusIs). The background jobs settle such rows (settleStatuses); a settings change that
// moves those instants re-derives them (rederiveStatuses).
//
// Listings and the escrow report select and count by the stored status; the rows of a page
// then get their details (reason, volumes) from the same rules, so the rules stay the one
// definition and a property test holds the stored status to them.

// refreshDeviceStatus brings the device's stored escrow status, and its volumes', up to date
// with the transaction's state at now: first volumes.missing_escrow_since, then the status.
// Every write path that changes volumes, keys, rotations, failures, reports, retirement or
// the settings behind the status calls it before it commits.
func refreshDeviceStatus(ctx context.Context, tx dbtx, deviceID string, now time.Time) error {
	if err := refreshMissingEscrow(ctx, tx, deviceID, now); err != nil {
		return err
	}
	settings, err := loadSettings(ctx, tx)
	if err != nil {
		return err
	}
	return storeStatuses(ctx, tx, []string{deviceID}, now, settings)
}

// storedStatus is what a device row holds of its status.
type storedStatus struct {
	status, why                  string
	missing                      bool
	since, until, liste, recheck sql.NullInt64
}

// storedColumns are the device row's stored status, in the order scanStored reads them.
const storedColumns = `escrow_status, status_why, status_missing, status_since, status_until, listed_from, recheck_at`

// scanStored scans a row of deviceColumns then storedColumns.
func scanStored(s scanner) (escrow.Device, storedStatus, error) {
	var st storedStatus
	d, err := scanDevice(s, &st.status, &st.why, &st.missing, &st.since, &st.until, &st.liste, &st.recheck)
	return d, st, err
}

// result is the stored status as the rules gave it, and whether it still holds at now: false
// once recheck_at has come (a grace period or rotation timeout of one of its volumes ran out,
// escrow.VolumeState.NextChange), when the rules must be applied again.
func (st storedStatus) result(now time.Time) (escrow.StatusResult, bool) {
	r := escrow.StatusResult{Status: escrow.EscrowStatus(st.status), Why: st.why, MissingEscrow: st.missing,
		Since: fromMicros(st.since), Until: fromMicros(st.until)}
	return r, r.Status != "" && !(st.recheck.Valid && st.recheck.Int64 <= micros(now))
}

// withStored returns the devices' status from what their rows hold, applying the rules again
// (loading volumes) only to the rows whose recheck_at has come. Listings read this way cost a
// row per device; the details (volumes) come from GetDevice.
func withStored(ctx context.Context, q dbtx, devices []escrow.Device, stored []storedStatus, now time.Time, s escrow.Settings) ([]escrow.DeviceDetail, error) {
	out := make([]escrow.DeviceDetail, len(devices))
	var again []escrow.Device
	var at []int
	for i, d := range devices {
		r, ok := stored[i].result(now)
		out[i] = escrow.DeviceDetail{Device: d, Status: r}
		if !ok {
			again, at = append(again, d), append(at, i)
		}
	}
	if len(again) == 0 {
		return out, nil
	}
	details, _, _, err := computeStatus(ctx, q, again, now, s)
	if err != nil {
		return nil, err
	}
	for j, i := range at {
		out[i].Status = details[j].Status
	}
	return out, nil
}

// storeStatuses derives and stores the status of the devices (any number; callers batch them)
// and of their volumes.
func storeStatuses(ctx context.Context, tx dbtx, ids []string, now time.Time, s escrow.Settings) error {
	if len(ids) == 0 {
		return nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT `+deviceColumns+`, `+storedColumns+`
		FROM devices WHERE id IN (`+placeholders(1, len(ids))+`)`, anys(ids)...)
	if err != nil {
		return err
	}
	var devices []escrow.Device
	stored := map[string]storedStatus{}
	for rows.Next() {
		d, st, err := scanStored(rows)
		if err != nil {
			rows.Close()
			return err
		}
		devices = append(devices, d)
		stored[d.ID] = st
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	details, storedVolumes, recheck, err := computeStatus(ctx, tx, devices, now, s)
	if err != nil {
		return err
	}
	for _, d := range details {
		want := storedStatus{status: string(d.Status.Status), why: d.Status.Why, missing: d.Status.MissingEscrow,
			since: nullMicros(d.Status.Since), until: nullMicros(d.Status.Until),
			liste: nullMicros(escrow.ListedFrom(d.Status, s.EscrowGracePeriod)), recheck: nullMicros(recheck[d.ID])}
		if want != stored[d.ID] {
			if _, err := tx.ExecContext(ctx, `UPDATE devices SET escrow_status = $2, status_why = $3, status_missing = $4,
				status_since = $5, status_until = $6, listed_from = $7, recheck_at = $8 WHERE id = $1`,
				d.ID, want.status, want.why, want.missing, want.since, want.until, want.liste, want.recheck); err != nil {
				return err
			}
		}
		for _, v := range d.Volumes {
			want := volumeStatus{string(v.Status.Status), nullMicros(v.Status.Until)}
			if storedVolumes[volKey{d.ID, v.ID}] == want {
				continue
			}
			if _, err := tx.ExecContext(ctx, `UPDATE volumes SET escrow_status = $3, status_until = $4 WHERE device_id = $1 AND volume_id = $2`,
				d.ID, v.ID, want.status, want.until); err != nil {
				return err
			}
		}
	}
	return nil
}

type volumeStatus struct {
	status string
	until  sql.NullInt64
}

// statusIs is the SQL condition that the device row aliased alias is in status st at now: the
// stored status, where a pending one whose status_until has come is failed. now adds the
// instant as an argument and returns its placeholder; it is called only when needed.
func statusIs(alias string, st escrow.EscrowStatus, now func() string) string {
	switch st {
	case escrow.StatusFailed:
		return "(" + alias + ".escrow_status = 'failed' OR (" + alias + ".escrow_status = 'pending' AND " + alias + ".status_until <= " + now() + "))"
	case escrow.StatusPending:
		return "(" + alias + ".escrow_status = 'pending' AND (" + alias + ".status_until IS NULL OR " + alias + ".status_until > " + now() + "))"
	case escrow.StatusEscrowed, escrow.StatusNotAvailable:
		return alias + ".escrow_status = '" + string(st) + "'"
	}
	return "1 = 0"
}

// statusBatch is how many devices one derivation query covers.
const statusBatch = 500

// deriveAll stores the status of every device, in batches, inside tx: once, when the stored
// status is introduced.
func deriveAll(ctx context.Context, tx dbtx, now time.Time) error {
	settings, err := loadSettings(ctx, tx)
	if err != nil {
		return err
	}
	after := ""
	for {
		ids, err := queryAll(ctx, tx, scanString, `SELECT id FROM devices WHERE id > $1 ORDER BY id LIMIT `+itoa(statusBatch), after)
		if err != nil || len(ids) == 0 {
			return err
		}
		for _, id := range ids {
			if err := refreshMissingEscrow(ctx, tx, id, now); err != nil {
				return err
			}
		}
		if err := storeStatuses(ctx, tx, ids, now, settings); err != nil {
			return err
		}
		after = ids[len(ids)-1]
	}
}

// rederiveStatuses re-derives, inside the settings change's transaction, every device whose
// status or instants depend on the grace period or the rotation timeout: pending devices,
// devices with a volume missing escrow, devices with a delivered rotation. It reports how many.
func rederiveStatuses(ctx context.Context, tx dbtx, now time.Time, s escrow.Settings) (int, error) {
	seen := map[string]bool{}
	var ids []string
	for _, q := range []string{
		`SELECT id FROM devices WHERE escrow_status = 'pending' AND retired_at IS NULL`,
		`SELECT device_id FROM volumes WHERE missing_escrow_since IS NOT NULL`,
		`SELECT device_id FROM rotations WHERE status = 'delivered'`,
	} {
		got, err := queryAll(ctx, tx, scanString, q)
		if err != nil {
			return 0, err
		}
		for _, id := range got {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
	}
	for len(ids) > 0 {
		n := min(len(ids), statusBatch)
		if err := storeStatuses(ctx, tx, ids[:n], now, s); err != nil {
			return 0, err
		}
		ids = ids[n:]
	}
	return len(seen), nil
}

// settleStatuses stores again the status of devices whose stored result may have changed by
// itself (recheck_at has come: a pending status ran out, or a failed device's reason moved to
// another volume), a batch per transaction. Queries are exact without it; it keeps the number
// of such rows, which counts, filters and listings treat apart, small.
func (db *DB) settleStatuses(ctx context.Context) (int, error) {
	settled := 0
	for {
		now := db.Now()
		n := 0
		err := db.write(ctx, func(tx *sql.Tx) error {
			ids, err := queryAll(ctx, tx, scanString, `SELECT id FROM devices WHERE recheck_at IS NOT NULL AND recheck_at <= $1
				LIMIT `+itoa(statusBatch), micros(now))
			if err != nil {
				return err
			}
			settings, err := loadSettings(ctx, tx)
			if err != nil {
				return err
			}
			n = len(ids)
			return storeStatuses(ctx, tx, ids, now, settings)
		})
		settled += n
		if err != nil || n < statusBatch {
			return settled, err
		}
	}
}

func scanString(s scanner) (string, error) {
	var v string
	return v, s.Scan(&v)
}
