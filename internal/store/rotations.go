package store

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/keyward/keyward/internal/escrow"
)

// systemOrigin is the origin of what Keyward does by itself: automatic rotations, purges,
// timeouts.
func systemOrigin() escrow.Origin {
	return escrow.Origin{Actor: escrow.Actor{Type: escrow.ActorSystem, ID: "keyward", Name: "Keyward"}, Source: escrow.SourceSystem}
}

const rotationColumns = `id, device_id, volume_id, key_id, status, trigger_kind, reason, requested_by, requested_at,
	delivered_at, finished_at, new_key_id, message`

func scanRotation(s scanner) (escrow.Rotation, error) {
	var r escrow.Rotation
	var status string
	var requested int64
	var delivered, finished sql.NullInt64
	err := s.Scan(&r.ID, &r.DeviceID, &r.VolumeID, &r.KeyID, &status, &r.Trigger, &r.Reason, &r.RequestedBy, &requested,
		&delivered, &finished, &r.NewKeyID, &r.Message)
	r.Status = escrow.RotationStatus(status)
	r.RequestedAt, r.DeliveredAt, r.FinishedAt = time.UnixMicro(requested).UTC(), fromMicros(delivered), fromMicros(finished)
	return r, err
}

// requestRotation opens a rotation of the volume unless one is already open, in which case the
// open one is returned with created=false: triggers coalesce, at most one per volume.
func (db *DB) requestRotation(ctx context.Context, tx dbtx, o escrow.Origin, deviceID, volumeID, keyID, trigger string, a escrow.Access, now time.Time) (escrow.Rotation, bool, error) {
	reason, ticket := a.Reason, strings.TrimSpace(a.Ticket)
	r, err := scanRotation(tx.QueryRowContext(ctx, `SELECT `+rotationColumns+` FROM rotations
		WHERE device_id = $1 AND volume_id = $2 AND status IN ('requested', 'delivered')`, deviceID, volumeID))
	if err == nil {
		if trigger != escrow.TriggerManual {
			return r, false, nil // the disclosure or boot event that triggered it is on record
		}
		// Coalesced: no second rotation, but who asked and why is still part of the record.
		e := o.Event(escrow.ActionRotateRequest, escrow.OutcomeSuccess)
		e.DeviceID, e.KeyID, e.Reason, e.Ticket = deviceID, r.KeyID, reason, ticket
		e.Detail = "joined open rotation " + r.ID + " of volume " + volumeID + " (" + trigger + ")"
		return r, false, db.appendEvent(ctx, tx, e)
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return r, false, err
	}
	id, err := db.newID()
	if err != nil {
		return r, false, err
	}
	r = escrow.Rotation{ID: id, DeviceID: deviceID, VolumeID: volumeID, KeyID: keyID, Status: escrow.RotationRequested,
		Trigger: trigger, Reason: reason, RequestedBy: o.Actor.Name, RequestedAt: now.UTC().Truncate(time.Microsecond)}
	if _, err := tx.ExecContext(ctx, `INSERT INTO rotations (id, device_id, volume_id, key_id, status, trigger_kind, reason, requested_by, requested_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		r.ID, r.DeviceID, r.VolumeID, r.KeyID, string(r.Status), r.Trigger, r.Reason, r.RequestedBy, micros(r.RequestedAt)); err != nil {
		return r, false, err
	}
	e := o.Event(escrow.ActionRotateRequest, escrow.OutcomeSuccess)
	e.DeviceID, e.KeyID, e.Reason, e.Ticket = deviceID, keyID, reason, ticket
	e.Detail = "rotation " + r.ID + " of volume " + volumeID + " (" + trigger + ")"
	if err := db.appendEvent(ctx, tx, e); err != nil {
		return r, true, err
	}
	return r, true, refreshDeviceStatus(ctx, tx, deviceID, now)
}

// RequestRotation asks the device to rotate the recovery password of one volume, or of every
// encrypted volume when volumeID is empty, if allowed(device) says the principal may. The
// ticket rules of the settings apply to a (a refusal is CodeInvalid and changes nothing).
// Errors: CodeNotFound (device or volume), CodeForbidden, CodeInvalid, CodeNotEncrypted.
func (db *DB) RequestRotation(ctx context.Context, o escrow.Origin, deviceID, volumeID string, a escrow.Access, allowed func(escrow.Device) bool) ([]escrow.Rotation, error) {
	var out []escrow.Rotation
	var denied error
	now := db.Now()
	err := db.write(ctx, func(tx *sql.Tx) error {
		out, denied = nil, nil
		e := o.Event(escrow.ActionRotateRequest, escrow.OutcomeDenied)
		e.DeviceID, e.Reason, e.Ticket = deviceID, a.Reason, strings.TrimSpace(a.Ticket)
		_, settings, refused, err := db.admit(ctx, tx, e, a, func(d escrow.Device, _ escrow.Settings) bool { return allowed(d) }, "rotate this device's keys")
		if denied = refused; denied != nil || err != nil {
			return err
		}
		states, _, err := loadVolumeStates(ctx, tx, []string{deviceID}, settings)
		if err != nil {
			return err
		}
		var targets []escrow.Volume
		found := false
		for _, vs := range states[deviceID] {
			v := vs.Volume
			if volumeID != "" && v.ID != volumeID {
				continue
			}
			found = true
			// A volume never reported may still be encrypted (the agent escrows before its first
			// report); a volume reported off, or absent from the last report, is not rotated.
			if v.ProtectionStatus == "" || (v.Present && v.Encrypted()) {
				targets = append(targets, v)
			}
		}
		if volumeID != "" && !found {
			denied, e.Detail = escrow.Errorf(escrow.CodeNotFound, "volumeId: the device has no such volume"), "no such volume "+volumeID
			return db.appendEvent(ctx, tx, e)
		}
		if len(targets) == 0 {
			denied, e.Outcome, e.Detail = escrow.Errorf(escrow.CodeNotEncrypted, "device: BitLocker is off on every volume"), escrow.OutcomeError, "BitLocker is off"
			return db.appendEvent(ctx, tx, e)
		}
		for _, v := range targets {
			var keyID string
			err := tx.QueryRowContext(ctx, `SELECT key_id FROM recovery_keys WHERE device_id = $1 AND volume_id = $2
				AND kind = 'recoveryPassword' AND status = 'active' ORDER BY created_at DESC, id DESC LIMIT 1`, deviceID, v.ID).Scan(&keyID)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			r, _, err := db.requestRotation(ctx, tx, o, deviceID, v.ID, keyID, escrow.TriggerManual, a, now)
			if err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, denied
}

// Commands returns the device's pending work and marks rotations it has not seen before as
// delivered.
func (db *DB) Commands(ctx context.Context, o escrow.Origin, deviceID string) ([]escrow.Command, error) {
	var out []escrow.Command
	err := db.write(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = db.deliverCommands(ctx, tx, o, deviceID, db.Now())
		return err
	})
	return out, err
}

func (db *DB) deliverCommands(ctx context.Context, tx dbtx, o escrow.Origin, deviceID string, now time.Time) ([]escrow.Command, error) {
	if err := touchDevice(ctx, tx, deviceID, now); err != nil {
		return nil, err
	}
	rotations, err := openRotations(ctx, tx, deviceID)
	if err != nil {
		return nil, err
	}
	out := []escrow.Command{}
	delivered := false
	for _, r := range rotations {
		if r.Status == escrow.RotationRequested {
			delivered = true
			if _, err := tx.ExecContext(ctx, `UPDATE rotations SET status = 'delivered', delivered_at = $2 WHERE id = $1`, r.ID, micros(now)); err != nil {
				return nil, err
			}
			e := o.Event(escrow.ActionRotateDeliver, escrow.OutcomeSuccess)
			e.DeviceID, e.KeyID, e.Detail = deviceID, r.KeyID, "rotation "+r.ID+" of volume "+r.VolumeID
			if err := db.appendEvent(ctx, tx, e); err != nil {
				return nil, err
			}
		}
		out = append(out, escrow.Command{ID: r.ID, Type: escrow.CommandRotate, VolumeID: r.VolumeID, KeyID: r.KeyID})
	}
	if delivered {
		// A delivered rotation starts its timeout: the status now has an end.
		if err := refreshDeviceStatus(ctx, tx, deviceID, now); err != nil {
			return nil, err
		}
	}
	mismatched, err := mismatchedKeys(ctx, tx, deviceID)
	if err != nil {
		return nil, err
	}
	for _, k := range mismatched {
		out = append(out, escrow.Command{ID: reEscrowID(deviceID, k.keyID), Type: escrow.CommandReEscrow, VolumeID: k.volumeID, KeyID: k.keyID})
	}
	return out, nil
}

type mismatchedKey struct{ keyID, volumeID string }

// mismatchedKeys are the device's active recovery passwords that failed verification: the
// agent is asked to escrow each again.
func mismatchedKeys(ctx context.Context, tx dbtx, deviceID string) ([]mismatchedKey, error) {
	rows, err := tx.QueryContext(ctx, `SELECT key_id, volume_id FROM recovery_keys WHERE device_id = $1 AND status = 'active'
		AND kind = 'recoveryPassword' AND verification = 'mismatch' ORDER BY id`, deviceID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []mismatchedKey
	for rows.Next() {
		var k mismatchedKey
		if err := rows.Scan(&k.keyID, &k.volumeID); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// reEscrowNamespace scopes the IDs of re-escrow commands, which are derived rather than stored:
// the command exists exactly as long as the key's verification mismatch does.
var reEscrowNamespace = uuid.MustParse("6b0f3f1e-7a51-4c57-9d3e-2f1a8e5c4b90")

func reEscrowID(deviceID, keyID string) string {
	return uuid.NewSHA1(reEscrowNamespace, []byte(deviceID+"/"+keyID)).String()
}

// finishReEscrow records the result of a re-escrow command. The escrow itself is what clears a
// mismatch; a "completed" result is accepted once it has, a "failed" one marks the volume failed.
func (db *DB) finishReEscrow(ctx context.Context, tx dbtx, o escrow.Origin, deviceID, commandID string, res escrow.CommandResult, now time.Time) (bool, error) {
	rows, err := tx.QueryContext(ctx, `SELECT key_id, volume_id, verification FROM recovery_keys WHERE device_id = $1 AND kind = 'recoveryPassword'`, deviceID)
	if err != nil {
		return false, err
	}
	var keyID, volumeID, verification string
	found := false
	for rows.Next() && !found {
		if err := rows.Scan(&keyID, &volumeID, &verification); err != nil {
			rows.Close()
			return false, err
		}
		found = reEscrowID(deviceID, keyID) == commandID
	}
	rows.Close()
	if err := rows.Err(); err != nil || !found {
		return false, err
	}
	if res.Completed {
		if verification == string(escrow.Mismatch) {
			return true, escrow.Errorf(escrow.CodeConflict, "command: escrow the recovery password again before reporting the re-escrow completed")
		}
		return true, nil
	}
	msg := "re-escrow failed on the device: " + res.Message
	if _, err := tx.ExecContext(ctx, `UPDATE volumes SET failure = $3, failure_at = $4 WHERE device_id = $1 AND volume_id = $2`,
		deviceID, volumeID, msg, micros(now)); err != nil {
		return true, err
	}
	e := o.Event(escrow.ActionKeyEscrow, escrow.OutcomeError)
	e.DeviceID, e.KeyID, e.Detail = deviceID, keyID, msg
	if err := db.appendEvent(ctx, tx, e); err != nil {
		return true, err
	}
	return true, refreshDeviceStatus(ctx, tx, deviceID, now)
}

// FinishCommand records the outcome of a rotation the device carried out. A completed rotation
// must name a new key the device escrowed first, other than the key it replaces; the old key
// becomes superseded in the same transaction. A refusal leaves the rotation as it was and is
// recorded as a denied event. Errors: CodeNotFound, CodeConflict (not open, new key not
// escrowed, or the new key is the old one).
func (db *DB) FinishCommand(ctx context.Context, o escrow.Origin, deviceID, commandID string, res escrow.CommandResult) error {
	if err := escrow.CheckText("message", res.Message, false, 2000); err != nil {
		return err
	}
	now := db.Now()
	var refused error
	err := db.write(ctx, func(tx *sql.Tx) error {
		refused = nil
		if err := touchDevice(ctx, tx, deviceID, now); err != nil {
			return err
		}
		action := escrow.ActionRotateComplete
		if !res.Completed {
			action = escrow.ActionRotateFail
		}
		refuse := func(keyID string, err error) error {
			refused = err
			e := o.Event(action, escrow.OutcomeDenied)
			e.DeviceID, e.KeyID, e.Detail = deviceID, keyID, "command "+commandID+": "+escrow.ErrorMessage(err)
			return db.appendEvent(ctx, tx, e)
		}
		r, err := scanRotation(tx.QueryRowContext(ctx, `SELECT `+rotationColumns+` FROM rotations WHERE id = $1 AND device_id = $2`, commandID, deviceID))
		if errors.Is(err, sql.ErrNoRows) {
			found, err := db.finishReEscrow(ctx, tx, o, deviceID, commandID, res, now)
			switch {
			case found && escrow.ErrorCode(err) == escrow.CodeConflict:
				return refuse("", err)
			case found || err != nil:
				return err
			}
			return refuse("", escrow.Errorf(escrow.CodeNotFound, "command: no such command for this device"))
		}
		if err != nil {
			return err
		}
		if !r.Status.Open() {
			if r.Status == escrow.RotationCompleted && res.Completed && r.NewKeyID == res.NewKeyID {
				return nil // a retry of a result that was recorded
			}
			return refuse(r.KeyID, escrow.Errorf(escrow.CodeConflict, "command: the rotation is already %s", r.Status))
		}
		settings, err := loadSettings(ctx, tx)
		if err != nil {
			return err
		}
		if !res.Completed {
			return db.failRotation(ctx, tx, o, r, "rotation failed on the device: "+res.Message, now)
		}
		if r.KeyID != "" && res.NewKeyID == r.KeyID {
			// The key this rotation replaces is the one that was disclosed (or is too old): a
			// "completion" naming it would close the rotation and leave that key in service.
			return refuse(r.KeyID, escrow.Errorf(escrow.CodeConflict, "newKeyId: is the key this rotation replaces; add and escrow a new recovery password"))
		}
		var newStatus, newKind, newVolume string
		err = tx.QueryRowContext(ctx, `SELECT status, kind, volume_id FROM recovery_keys WHERE device_id = $1 AND key_id = $2`,
			deviceID, res.NewKeyID).Scan(&newStatus, &newKind, &newVolume)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && (newStatus != "active" || newKind != string(escrow.KindRecoveryPassword) || newVolume != r.VolumeID)) {
			return refuse(r.KeyID, escrow.Errorf(escrow.CodeConflict, "newKeyId: escrow the new recovery password for this volume before completing the rotation"))
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE rotations SET status = 'completed', finished_at = $2, new_key_id = $3, message = $4 WHERE id = $1`,
			r.ID, micros(now), res.NewKeyID, res.Message); err != nil {
			return err
		}
		if r.KeyID != "" {
			if err := db.supersede(ctx, tx, o, deviceID, r.KeyID, "replaced by rotation "+r.ID, now, settings); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE volumes SET failure = '', failure_at = NULL WHERE device_id = $1 AND volume_id = $2`, deviceID, r.VolumeID); err != nil {
			return err
		}
		if err := refreshDeviceStatus(ctx, tx, deviceID, now); err != nil {
			return err
		}
		e := o.Event(escrow.ActionRotateComplete, escrow.OutcomeSuccess)
		e.DeviceID, e.KeyID, e.Detail = deviceID, res.NewKeyID, "rotation "+r.ID+" replaced "+r.KeyID
		return db.appendEvent(ctx, tx, e)
	})
	if err != nil {
		return err
	}
	return refused
}

// failRotation marks an open rotation failed and the volume failed until a later escrow or
// rotation succeeds.
func (db *DB) failRotation(ctx context.Context, tx dbtx, o escrow.Origin, r escrow.Rotation, message string, now time.Time) error {
	if _, err := tx.ExecContext(ctx, `UPDATE rotations SET status = 'failed', finished_at = $2, message = $3 WHERE id = $1`, r.ID, micros(now), message); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE volumes SET failure = $3, failure_at = $4 WHERE device_id = $1 AND volume_id = $2`,
		r.DeviceID, r.VolumeID, message, micros(now)); err != nil {
		return err
	}
	e := o.Event(escrow.ActionRotateFail, escrow.OutcomeError)
	e.DeviceID, e.KeyID, e.Detail = r.DeviceID, r.KeyID, "rotation "+r.ID+": "+message
	if err := db.appendEvent(ctx, tx, e); err != nil {
		return err
	}
	return refreshDeviceStatus(ctx, tx, r.DeviceID, now)
}

// supersede marks an active key superseded and starts its retention period.
func (db *DB) supersede(ctx context.Context, tx dbtx, o escrow.Origin, deviceID, keyID, why string, now time.Time, s escrow.Settings) error {
	res, err := tx.ExecContext(ctx, `UPDATE recovery_keys SET status = 'superseded', superseded_at = $3, retain_until = $4
		WHERE device_id = $1 AND key_id = $2 AND status = 'active'`, deviceID, keyID, micros(now), micros(now.Add(s.RetentionPeriod)))
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return err
	}
	e := o.Event(escrow.ActionKeySupersede, escrow.OutcomeSuccess)
	e.DeviceID, e.KeyID, e.Detail = deviceID, keyID, why
	return db.appendEvent(ctx, tx, e)
}
