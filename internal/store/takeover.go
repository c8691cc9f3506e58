package store

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"errors"
	"time"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/seal"
)

// takeOverImported runs in the escrow transaction of a new key on an enrolled device: if a
// device record made by an import (no agent) with the same name holds this key ID with the same
// material, the agent has proved it is that computer, so the imported record's other keys move
// to the agent's device (re-sealed under its rows) and the record is retired. A name alone
// proves nothing: a planted device could claim any hostname, so the material must match.
func (db *DB) takeOverImported(ctx context.Context, tx dbtx, deviceID, keyID string, material []byte, now time.Time) error {
	var fromID string
	var ct, wk []byte
	err := tx.QueryRowContext(ctx, `SELECT i.id, k.ciphertext, k.wrapped_key FROM devices d
		JOIN devices i ON i.name_key = d.name_key AND i.imported_at IS NOT NULL AND i.retired_at IS NULL AND i.id <> d.id
		JOIN recovery_keys k ON k.device_id = i.id AND k.key_id = $2 AND k.ciphertext IS NOT NULL
		WHERE d.id = $1 AND d.imported_at IS NULL ORDER BY i.id LIMIT 1`, deviceID, keyID).Scan(&fromID, &ct, &wk)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	held, err := db.sealer.Open(seal.Sealed{Ciphertext: ct, WrappedKey: wk}, keyAAD(fromID, keyID))
	if err != nil {
		return escrow.Wrap(escrow.CodeInternal, err, "stored key does not open")
	}
	same := subtle.ConstantTimeCompare(held, material) == 1
	clear(held)
	if !same {
		return nil
	}
	type key struct {
		keyID, volumeID, volumeType, kind, status string
		created                                   int64
		ct, wk                                    []byte
	}
	keys, err := queryAll(ctx, tx, func(s scanner) (key, error) {
		var k key
		return k, s.Scan(&k.keyID, &k.volumeID, &k.volumeType, &k.kind, &k.status, &k.created, &k.ct, &k.wk)
	}, `SELECT k.key_id, k.volume_id, v.volume_type, k.kind, k.status, k.created_at, k.ciphertext, k.wrapped_key
		FROM recovery_keys k JOIN volumes v ON v.device_id = k.device_id AND v.volume_id = k.volume_id
		WHERE k.device_id = $1 AND k.ciphertext IS NOT NULL AND k.key_id <> $2
		AND NOT EXISTS (SELECT 1 FROM recovery_keys o WHERE o.device_id = $3 AND o.key_id = k.key_id)`, fromID, keyID, deviceID)
	if err != nil {
		return err
	}
	for _, k := range keys {
		m, err := db.sealer.Open(seal.Sealed{Ciphertext: k.ct, WrappedKey: k.wk}, keyAAD(fromID, k.keyID))
		if err != nil {
			return escrow.Wrap(escrow.CodeInternal, err, "stored key does not open")
		}
		s, err := db.sealer.Seal(m, keyAAD(deviceID, k.keyID))
		clear(m)
		if err != nil {
			return escrow.Wrap(escrow.CodeInternal, err, "sealing failed")
		}
		if err := upsertVolume(ctx, tx, deviceID, k.volumeID, "", escrow.VolumeType(k.volumeType)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO recovery_keys (device_id, key_id, volume_id, kind, status, ciphertext, wrapped_key, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, deviceID, k.keyID, k.volumeID, k.kind, k.status, s.Ciphertext, s.WrappedKey, k.created); err != nil {
			return err
		}
	}
	// The imported record keeps its metadata and history; its material is gone from it.
	if _, err := tx.ExecContext(ctx, `UPDATE recovery_keys SET status = 'purged', ciphertext = NULL, wrapped_key = NULL WHERE device_id = $1`, fromID); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE devices SET retired_at = $2, retired_by = 'system', retire_reason = $3 WHERE id = $1`,
		fromID, micros(now), "taken over by its agent's device "+deviceID); err != nil {
		return err
	}
	for _, id := range []string{deviceID, fromID} {
		if err := refreshImportedStatus(ctx, tx, id, now); err != nil {
			return err
		}
	}
	e := systemOrigin().Event(escrow.ActionDeviceRetire, escrow.OutcomeSuccess)
	e.DeviceID, e.KeyID = fromID, keyID
	e.Detail = "imported record taken over by device " + deviceID + ", which escrowed the same recovery password; " + itoa(len(keys)) + " other keys moved to it"
	return db.appendEvent(ctx, tx, e)
}
