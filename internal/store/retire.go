package store

import (
	"context"
	"database/sql"

	"github.com/keyward/keyward/internal/escrow"
)

// retiredMessage is what a rotation left open by a retired device says.
const retiredMessage = "the device was retired"

// RetireDevice takes a decommissioned or wiped device out of service, in one transaction with
// its device.retire event: its token is refused from the next request on (AuthenticateDevice,
// and touchDevice inside every agent write), its open rotations fail, and its active keys are
// superseded, so that they can still be viewed (audited, with a reason) for the retention
// period and the purge job then destroys them like any other superseded key. The device leaves
// the device list, the escrow report and the census; GetDevice still answers, with RetiredAt.
// The caller checks that the origin may retire devices (admins only). Errors: CodeInvalid for
// a missing or bad reason, CodeNotFound, CodeConflict for a device already retired.
func (db *DB) RetireDevice(ctx context.Context, o escrow.Origin, deviceID, reason string) (escrow.DeviceDetail, error) {
	if err := escrow.CheckText("reason", reason, true, 500); err != nil {
		return escrow.DeviceDetail{}, err
	}
	var out escrow.DeviceDetail
	now := db.Now()
	err := db.write(ctx, func(tx *sql.Tx) error {
		d, err := findDevice(ctx, tx, deviceID)
		if err != nil {
			return err
		}
		if d.Retired() {
			return escrow.Errorf(escrow.CodeConflict, "device: already retired on %s", d.RetiredAt.Format("2006-01-02"))
		}
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET retired_at = $2, retired_by = $3, retire_reason = $4 WHERE id = $1`,
			deviceID, micros(now), o.Actor.Name, reason); err != nil {
			return err
		}
		rotations, err := openRotations(ctx, tx, deviceID)
		if err != nil {
			return err
		}
		for _, r := range rotations {
			if err := db.failRotation(ctx, tx, o, r, retiredMessage, now); err != nil {
				return err
			}
		}
		settings, err := loadSettings(ctx, tx)
		if err != nil {
			return err
		}
		keyIDs, err := activeKeyIDs(ctx, tx, deviceID)
		if err != nil {
			return err
		}
		for _, k := range keyIDs {
			if err := db.supersede(ctx, tx, o, deviceID, k, retiredMessage, now, settings); err != nil {
				return err
			}
		}
		e := o.Event(escrow.ActionDeviceRetire, escrow.OutcomeSuccess)
		e.DeviceID, e.Reason = deviceID, reason
		e.Detail = "device " + d.Name + " retired; " + itoa(len(rotations)) + " open rotations failed, " + itoa(len(keyIDs)) +
			" active keys superseded, kept until " + now.Add(settings.RetentionPeriod).UTC().Format("2006-01-02T15:04:05Z")
		if err := db.appendEvent(ctx, tx, e); err != nil {
			return err
		}
		if err := refreshDeviceStatus(ctx, tx, deviceID, now); err != nil {
			return err
		}
		if d, err = findDevice(ctx, tx, deviceID); err != nil {
			return err
		}
		out, err = db.detailOf(ctx, tx, d)
		return err
	})
	return out, err
}

// openRotations returns the device's rotations that are requested or delivered.
func openRotations(ctx context.Context, tx dbtx, deviceID string) ([]escrow.Rotation, error) {
	return queryAll(ctx, tx, scanRotation, `SELECT `+rotationColumns+` FROM rotations
		WHERE device_id = $1 AND status IN ('requested', 'delivered') ORDER BY requested_at, id`, deviceID)
}

// activeKeyIDs returns the IDs of the device's active keys.
func activeKeyIDs(ctx context.Context, tx dbtx, deviceID string) ([]string, error) {
	return queryAll(ctx, tx, func(s scanner) (string, error) {
		var id string
		return id, s.Scan(&id)
	}, `SELECT key_id FROM recovery_keys WHERE device_id = $1 AND status = 'active' ORDER BY key_id`, deviceID)
}
