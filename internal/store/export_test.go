package store

import (
	"context"
	"database/sql"

	"github.com/keyward/keyward/internal/escrow"
)

// SetRewrapHook makes RewrapMasterKey call f between reading each batch and writing it.
func SetRewrapHook(db *DB, f func()) { db.rewrapHook = f }

// StoredStatus is what the device's row and its volumes' rows hold of their escrow status, read
// at the store's now the way every query reads it: a pending status whose status_until has come
// is failed.
func StoredStatus(ctx context.Context, db *DB, deviceID string) (escrow.EscrowStatus, map[string]escrow.EscrowStatus, error) {
	now := micros(db.Now())
	effective := func(st string, until sql.NullInt64) escrow.EscrowStatus {
		if st == string(escrow.StatusPending) && until.Valid && until.Int64 <= now {
			return escrow.StatusFailed
		}
		return escrow.EscrowStatus(st)
	}
	var st string
	var until sql.NullInt64
	if err := db.ro.QueryRowContext(ctx, `SELECT escrow_status, status_until FROM devices WHERE id = $1`, deviceID).Scan(&st, &until); err != nil {
		return "", nil, err
	}
	volumes, err := queryAll(ctx, db.ro, func(s scanner) ([2]string, error) {
		var id, st string
		var until sql.NullInt64
		err := s.Scan(&id, &st, &until)
		return [2]string{id, string(effective(st, until))}, err
	}, `SELECT volume_id, escrow_status, status_until FROM volumes WHERE device_id = $1`, deviceID)
	if err != nil {
		return "", nil, err
	}
	out := map[string]escrow.EscrowStatus{}
	for _, v := range volumes {
		out[v[0]] = escrow.EscrowStatus(v[1])
	}
	return effective(st, until), out, nil
}
