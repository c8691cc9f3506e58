package store

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/seal"
)

// ExportKeys discloses every active key and every superseded key still retained, with its
// device's name and owner, for a break-glass copy kept offline: each goes to each in one
// transaction, then finish runs (it makes the copy durable), then the one key.export event is
// appended with the count and the recipient's fingerprint, and the transaction commits. If any
// step fails nothing is recorded, and the caller must throw the copy away: the copy exists
// only with its event. reason is required. Errors: CodeInvalid, CodeUnavailable, and whatever
// each or finish return.
func (db *DB) ExportKeys(ctx context.Context, o escrow.Origin, reason, recipient string, each func(escrow.ExportedKey) error, finish func() error) (int, error) {
	if err := escrow.CheckText("reason", reason, true, 1000); err != nil {
		return 0, err
	}
	if err := escrow.CheckText("recipient", recipient, true, 1000); err != nil {
		return 0, err
	}
	now := db.Now()
	var n int
	err := db.write(ctx, func(tx *sql.Tx) error {
		n = 0
		rows, err := tx.QueryContext(ctx, `SELECT `+keyColumns+`, d.owner_upn, k.ciphertext, k.wrapped_key`+keyFrom+`
			WHERE k.ciphertext IS NOT NULL AND (k.status = 'active' OR (k.status = 'superseded' AND k.retain_until > $1))
			ORDER BY d.name, k.device_id, k.id`, micros(now))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var k escrow.ExportedKey
			var s seal.Sealed
			if _, k.RecoveryKey, err = scanKey(rows, &k.OwnerUPN, &s.Ciphertext, &s.WrappedKey); err != nil {
				return err
			}
			material, err := db.sealer.Open(s, keyAAD(k.DeviceID, k.KeyID))
			if err != nil {
				return escrow.Wrap(escrow.CodeInternal, err, "stored key "+k.KeyID+" does not open")
			}
			k.Material = string(material)
			clear(material)
			if err := each(k); err != nil {
				return err
			}
			n++
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows.Close()
		if err := finish(); err != nil {
			return err
		}
		e := o.Event(escrow.ActionKeyExport, escrow.OutcomeSuccess)
		e.Reason = reason
		e.Detail = fmt.Sprintf("%d keys in a break-glass copy for recipient %s", n, recipient)
		return db.appendEvent(ctx, tx, e)
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
