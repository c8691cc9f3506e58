package store

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"time"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/seal"
)

// ApplyReport stores what the device reported, in one transaction: volumes and protectors,
// keys whose protector is gone become superseded (and keys whose protector is back active
// again), fingerprints are checked, events recorded. It returns the device's pending commands.
func (db *DB) ApplyReport(ctx context.Context, o escrow.Origin, deviceID string, r escrow.Report) ([]escrow.Command, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	now := db.Now()
	var commands []escrow.Command
	err := db.write(ctx, func(tx *sql.Tx) error {
		settings, err := loadSettings(ctx, tx)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE volumes SET present = FALSE WHERE device_id = $1`, deviceID); err != nil {
			return err
		}
		for _, v := range r.Volumes {
			if err := db.applyVolume(ctx, tx, o, deviceID, v, now, settings); err != nil {
				return err
			}
		}
		for _, ev := range r.Events {
			if err := db.applyEvent(ctx, tx, o, deviceID, ev, now); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET reported_at = $2 WHERE id = $1`, deviceID, micros(now)); err != nil {
			return err
		}
		if commands, err = db.deliverCommands(ctx, tx, o, deviceID, now); err != nil {
			return err
		}
		return refreshDeviceStatus(ctx, tx, deviceID, now)
	})
	return commands, err
}

func (db *DB) applyVolume(ctx context.Context, tx *sql.Tx, o escrow.Origin, deviceID string, v escrow.ReportedVolume, now time.Time, s escrow.Settings) error {
	lock := v.LockStatus
	if lock == "" {
		lock = escrow.Unlocked // SPEC §7: absent means unlocked
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO volumes (device_id, volume_id, mount_point, volume_type, protection_status, encryption_status, lock_status, present)
		VALUES ($1, $2, $3, $4, $5, $6, $7, TRUE)
		ON CONFLICT (device_id, volume_id) DO UPDATE SET mount_point = excluded.mount_point, volume_type = excluded.volume_type,
		protection_status = excluded.protection_status, encryption_status = excluded.encryption_status, lock_status = excluded.lock_status, present = TRUE`,
		deviceID, v.ID, v.MountPoint, string(v.Type), string(v.ProtectionStatus), string(v.EncryptionStatus), string(lock)); err != nil {
		return err
	}
	// The threat is losing a key while its drive still exists: a locked data drive, or one whose
	// protectors the agent could not read, is reported with an empty or partial list. Such a
	// list changes no key (no supersession, so no purge; no reactivation; no verification), and
	// an empty one leaves the protectors last read in place.
	readable := v.ProtectorsReadable()
	if !readable && len(v.Protectors) == 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM protectors WHERE device_id = $1 AND volume_id = $2`, deviceID, v.ID); err != nil {
		return err
	}
	onVolume := map[string]bool{}
	for _, p := range v.Protectors {
		if onVolume[p.KeyID] {
			continue
		}
		onVolume[p.KeyID] = true
		if _, err := tx.ExecContext(ctx, `INSERT INTO protectors (device_id, volume_id, key_id, type) VALUES ($1, $2, $3, $4)`,
			deviceID, v.ID, p.KeyID, string(p.Type)); err != nil {
			return err
		}
	}
	if !readable {
		return nil
	}

	rows, err := tx.QueryContext(ctx, `SELECT key_id, status, kind, verification, ciphertext, wrapped_key FROM recovery_keys
		WHERE device_id = $1 AND volume_id = $2 AND status IN ('active', 'superseded')`, deviceID, v.ID)
	if err != nil {
		return err
	}
	type heldKey struct {
		keyID, status, kind, verification string
		sealed                            seal.Sealed
	}
	var held []heldKey
	for rows.Next() {
		var k heldKey
		if err := rows.Scan(&k.keyID, &k.status, &k.kind, &k.verification, &k.sealed.Ciphertext, &k.sealed.WrappedKey); err != nil {
			rows.Close()
			return err
		}
		held = append(held, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	var vk []byte
	defer func() { clear(vk) }()
	for _, k := range held {
		switch {
		case k.status == string(escrow.KeyActive) && !onVolume[k.keyID]:
			if err := db.supersede(ctx, tx, o, deviceID, k.keyID, "protector no longer on the volume", now, s); err != nil {
				return err
			}
			continue
		case k.status == string(escrow.KeySuperseded) && onVolume[k.keyID]:
			// "active" means the protector is on the volume; the device says it is again.
			if _, err := tx.ExecContext(ctx, `UPDATE recovery_keys SET status = 'active', superseded_at = NULL, retain_until = NULL
				WHERE device_id = $1 AND key_id = $2`, deviceID, k.keyID); err != nil {
				return err
			}
		case k.status == string(escrow.KeySuperseded):
			continue
		}
		fp, ok := v.Fingerprints[k.keyID]
		if !ok || k.kind != string(escrow.KindRecoveryPassword) {
			continue
		}
		if vk == nil {
			if vk, err = db.verificationKey(ctx, tx, deviceID); err != nil {
				return err
			}
		}
		want, err := db.fingerprint(vk, deviceID, k.keyID, k.sealed)
		if err != nil {
			return err
		}
		got, _ := hex.DecodeString(fp)
		verification := escrow.Mismatch
		if hmac.Equal(want, got) {
			verification = escrow.Verified
		}
		if _, err := tx.ExecContext(ctx, `UPDATE recovery_keys SET verification = $3,
			verified_at = CASE WHEN $3 = 'verified' THEN $4 ELSE verified_at END WHERE device_id = $1 AND key_id = $2`,
			deviceID, k.keyID, string(verification), micros(now)); err != nil {
			return err
		}
		if string(verification) != k.verification {
			e := o.Event(escrow.ActionKeyVerify, escrow.OutcomeSuccess)
			e.DeviceID, e.KeyID, e.Detail = deviceID, k.keyID, "escrowed recovery password matches the volume"
			if verification == escrow.Mismatch {
				e.Outcome, e.Detail = escrow.OutcomeError, "escrowed recovery password does not match the volume"
			}
			if err := db.appendEvent(ctx, tx, e); err != nil {
				return err
			}
		}
	}
	return nil
}

// verificationKey opens the device's verification key.
func (db *DB) verificationKey(ctx context.Context, tx dbtx, deviceID string) ([]byte, error) {
	var s seal.Sealed
	if err := tx.QueryRowContext(ctx, `SELECT verification_key, verification_key_wrap FROM devices WHERE id = $1`, deviceID).
		Scan(&s.Ciphertext, &s.WrappedKey); err != nil {
		return nil, err
	}
	vk, err := db.sealer.Open(s, verificationAAD(deviceID))
	if err != nil {
		return nil, escrow.Wrap(escrow.CodeInternal, err, "stored verification key does not open")
	}
	return vk, nil
}

// fingerprint is HMAC-SHA256 under the device's verification key over the canonical password
// held for the key (SPEC §3), computed the way the agent computes it.
func (db *DB) fingerprint(vk []byte, deviceID, keyID string, s seal.Sealed) ([]byte, error) {
	material, err := db.sealer.Open(s, keyAAD(deviceID, keyID))
	if err != nil {
		return nil, escrow.Wrap(escrow.CodeInternal, err, "stored key "+keyID+" does not open")
	}
	defer clear(material)
	m := hmac.New(sha256.New, vk)
	m.Write(material)
	return m.Sum(nil), nil
}

func (db *DB) applyEvent(ctx context.Context, tx *sql.Tx, o escrow.Origin, deviceID string, ev escrow.DeviceEvent, now time.Time) error {
	var exists int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM volumes WHERE device_id = $1 AND volume_id = $2`, deviceID, ev.VolumeID).Scan(&exists)
	if err == sql.ErrNoRows {
		return escrow.Errorf(escrow.CodeInvalid, "events: volumeId is not a volume of this device")
	}
	if err != nil {
		return err
	}
	switch ev.Type {
	case escrow.EventEscrowFailed, escrow.EventRotationFailed:
		what := "escrow failed"
		if ev.Type == escrow.EventRotationFailed {
			what = "rotation failed"
		}
		msg := what + " on the device"
		if ev.Message != "" {
			msg += ": " + ev.Message
		}
		if _, err := tx.ExecContext(ctx, `UPDATE volumes SET failure = $3, failure_at = $4 WHERE device_id = $1 AND volume_id = $2`,
			deviceID, ev.VolumeID, msg, micros(now)); err != nil {
			return err
		}
		action := escrow.ActionKeyEscrow
		if ev.Type == escrow.EventRotationFailed {
			action = escrow.ActionRotateFail
			var open escrow.Rotation
			open, err = scanRotation(tx.QueryRowContext(ctx, `SELECT `+rotationColumns+` FROM rotations WHERE device_id = $1 AND volume_id = $2
				AND status IN ('requested', 'delivered')`, deviceID, ev.VolumeID))
			if err == nil {
				return db.failRotation(ctx, tx, o, open, msg, now)
			}
			if err != sql.ErrNoRows {
				return err
			}
		}
		e := o.Event(action, escrow.OutcomeError)
		e.DeviceID, e.KeyID, e.Detail = deviceID, ev.KeyID, msg
		return db.appendEvent(ctx, tx, e)
	case escrow.EventRecoveryUsed:
		keyID := ev.KeyID
		_, _, err := db.requestRotation(ctx, tx, o, deviceID, ev.VolumeID, keyID, escrow.TriggerRecoveryUsed, escrow.Access{Reason: "recovery password used at boot"}, now)
		return err
	}
	return nil
}
