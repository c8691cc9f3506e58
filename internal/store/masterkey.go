package store

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/seal"
)

// sealedTable is a table holding sealed values: recovery keys and device verification keys.
// Re-wrapping walks it in order of its primary key, one batch per transaction.
type sealedTable struct {
	what string // for counts and messages
	// query selects cursor, AAD parts, ciphertext and wrapped key of the rows after $1, at most
	// $2 of them, in cursor order.
	query string
	// update replaces the wrapped key ($1) of the row ($2) only if it still holds the
	// ciphertext ($3) and wrapped key ($4) that were read: a value written meanwhile by a
	// server (an escrow, a re-escrow) is never overwritten.
	update string
	start  any
	scan   func(*sql.Rows) (sealedRow, error)
}

// sealedRow is one sealed value with where it lives.
type sealedRow struct {
	cursor any
	aad    []byte
	value  seal.Sealed
}

var sealedTables = []sealedTable{
	{
		what: "recovery keys",
		query: `SELECT id, device_id, key_id, ciphertext, wrapped_key FROM recovery_keys
			WHERE id > $1 AND wrapped_key IS NOT NULL ORDER BY id LIMIT $2`,
		update: `UPDATE recovery_keys SET wrapped_key = $1 WHERE id = $2 AND ciphertext = $3 AND wrapped_key = $4`,
		start:  int64(0),
		scan: func(rows *sql.Rows) (sealedRow, error) {
			var r sealedRow
			var id int64
			var deviceID, keyID string
			err := rows.Scan(&id, &deviceID, &keyID, &r.value.Ciphertext, &r.value.WrappedKey)
			r.cursor, r.aad = id, keyAAD(deviceID, keyID)
			return r, err
		},
	},
	{
		what: "device verification keys",
		query: `SELECT id, verification_key, verification_key_wrap FROM devices
			WHERE id > $1 ORDER BY id LIMIT $2`,
		update: `UPDATE devices SET verification_key_wrap = $1 WHERE id = $2 AND verification_key = $3 AND verification_key_wrap = $4`,
		start:  "",
		scan: func(rows *sql.Rows) (sealedRow, error) {
			var r sealedRow
			var id string
			err := rows.Scan(&id, &r.value.Ciphertext, &r.value.WrappedKey)
			r.cursor, r.aad = id, verificationAAD(id)
			return r, err
		},
	},
}

// checkTable is the check value's row, re-wrapped last, with the audit event.
var checkTable = sealedTable{
	what:   "check value",
	update: `UPDATE seal_check SET wrapped_key = $1 WHERE id = $2 AND ciphertext = $3 AND wrapped_key = $4`,
}

// RewrapCounts counts what re-wrapping did to the values of one kind.
type RewrapCounts struct {
	Rewrapped int // now wrapped by the primary master key
	Current   int // already wrapped by it, left alone
	Changed   int // changed by another writer between read and write; left for the next run
	Failed    int // did not open with this master key file; left untouched
}

func (c *RewrapCounts) add(o RewrapCounts) {
	c.Rewrapped += o.Rewrapped
	c.Current += o.Current
	c.Changed += o.Changed
	c.Failed += o.Failed
}

// RewrapResult is what RewrapMasterKey did, per kind of sealed value.
type RewrapResult struct {
	PrimaryKeyID uint32
	RecoveryKeys RewrapCounts
	DeviceKeys   RewrapCounts
	Check        RewrapCounts
}

// Total sums the counts of every kind.
func (r RewrapResult) Total() RewrapCounts {
	var t RewrapCounts
	t.add(r.RecoveryKeys)
	t.add(r.DeviceKeys)
	t.add(r.Check)
	return t
}

func (r RewrapResult) String() string {
	c := r.Total()
	return fmt.Sprintf("master key ID %d is primary: re-wrapped %d recovery keys, %d device keys and %d check value; %d already wrapped by it; %d changed meanwhile; %d did not open",
		r.PrimaryKeyID, r.RecoveryKeys.Rewrapped, r.DeviceKeys.Rewrapped, r.Check.Rewrapped, c.Current, c.Changed, c.Failed)
}

// RewrapMasterKey re-wraps every data key (recovery keys, device verification keys and the
// check value) under the primary key of the store's master key file, while servers keep
// serving: in batches of batchSize rows, each its own short transaction. Values already
// wrapped by the primary are skipped without being decrypted, so the work can be interrupted
// and run again, and a second run changes nothing.
//
// A row is updated only with a value the Sealer verified to open under the primary, and only
// if it still holds what was read (a compare-and-swap on the old value), so a concurrent
// escrow is never overwritten; such rows are counted as changed and left for the next run.
// The last transaction re-wraps the check value and records a masterkey.rotate event.
func (db *DB) RewrapMasterKey(ctx context.Context, o escrow.Origin, batchSize int) (RewrapResult, error) {
	if db.sealer == nil {
		return RewrapResult{}, escrow.Errorf(escrow.CodeInternal, "re-wrapping needs the master key")
	}
	if batchSize < 1 {
		return RewrapResult{}, escrow.Errorf(escrow.CodeInvalid, "batch size: must be at least 1")
	}
	res := RewrapResult{PrimaryKeyID: db.sealer.PrimaryKeyID()}
	for i, tab := range sealedTables {
		counts := []*RewrapCounts{&res.RecoveryKeys, &res.DeviceKeys}[i]
		cursor := tab.start
		for {
			var batch []sealedRow
			err := db.read(ctx, func(tx *sql.Tx) error {
				var err error
				batch, err = readSealed(ctx, tx, tab, cursor, batchSize)
				return err
			})
			if err != nil {
				return res, err
			}
			if len(batch) == 0 {
				break
			}
			cursor = batch[len(batch)-1].cursor
			if db.rewrapHook != nil {
				db.rewrapHook()
			}
			var c RewrapCounts
			err = db.write(ctx, func(tx *sql.Tx) error {
				c = RewrapCounts{}
				return db.rewrapRows(ctx, tx, tab, batch, &c)
			})
			if err != nil {
				return res, err
			}
			counts.add(c)
		}
	}
	err := db.write(ctx, func(tx *sql.Tx) error {
		res.Check = RewrapCounts{}
		var r sealedRow
		r.cursor, r.aad = int64(1), seal.AAD("check")
		if err := tx.QueryRowContext(ctx, `SELECT ciphertext, wrapped_key FROM seal_check WHERE id = 1`).Scan(&r.value.Ciphertext, &r.value.WrappedKey); err != nil {
			return err
		}
		if err := db.rewrapRows(ctx, tx, checkTable, []sealedRow{r}, &res.Check); err != nil {
			return err
		}
		e := o.Event(escrow.ActionMasterKeyRotate, escrow.OutcomeSuccess)
		e.Detail = res.String()
		return db.appendEvent(ctx, tx, e)
	})
	return res, err
}

func readSealed(ctx context.Context, tx dbtx, tab sealedTable, after any, limit int) ([]sealedRow, error) {
	rows, err := tx.QueryContext(ctx, tab.query, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []sealedRow
	for rows.Next() {
		r, err := tab.scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// rewrapRows re-wraps the rows not yet wrapped by the primary key inside tx.
func (db *DB) rewrapRows(ctx context.Context, tx dbtx, tab sealedTable, rows []sealedRow, c *RewrapCounts) error {
	primary := db.sealer.PrimaryKeyID()
	for _, r := range rows {
		if id, err := seal.WrappingKeyID(r.value.WrappedKey); err == nil && id == primary {
			c.Current++
			continue
		}
		// Rewrap verifies that its result opens under the primary to the same data key.
		nv, err := db.sealer.Rewrap(r.value, r.aad)
		if err != nil {
			c.Failed++
			continue
		}
		res, err := tx.ExecContext(ctx, tab.update, nv.WrappedKey, r.cursor, r.value.Ciphertext, r.value.WrappedKey)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 1 {
			c.Rewrapped++
		} else {
			c.Changed++
		}
	}
	return nil
}

// MasterKeyUse counts sealed values by the ID of the master key wrapping them.
type MasterKeyUse struct {
	ByKey map[uint32]int
	// Unknown counts wrapped keys whose wrapping key cannot be read from them (damaged rows).
	Unknown int
}

// UsedBy returns how many values the given keys wrap, and which of them wrap any, in order.
func (u MasterKeyUse) UsedBy(ids []uint32) (int, []uint32) {
	n := 0
	var used []uint32
	for _, id := range ids {
		if u.ByKey[id] > 0 {
			n += u.ByKey[id]
			used = append(used, id)
		}
	}
	return n, used
}

func (u MasterKeyUse) String() string {
	var parts []string
	for _, id := range slices.Sorted(maps.Keys(u.ByKey)) {
		parts = append(parts, fmt.Sprintf("%d values wrapped by master key ID %d", u.ByKey[id], id))
	}
	if u.Unknown > 0 {
		parts = append(parts, fmt.Sprintf("%d values whose wrapping key cannot be read", u.Unknown))
	}
	if len(parts) == 0 {
		return "no sealed values"
	}
	return strings.Join(parts, ", ")
}

// MasterKeyUse counts every sealed value (recovery keys, device verification keys, the check
// value) by the master key that wraps it, from one snapshot.
func (db *DB) MasterKeyUse(ctx context.Context) (MasterKeyUse, error) {
	var u MasterKeyUse
	err := db.read(ctx, func(tx *sql.Tx) error {
		var err error
		u, err = masterKeyUse(ctx, tx)
		return err
	})
	return u, err
}

func masterKeyUse(ctx context.Context, tx dbtx) (MasterKeyUse, error) {
	u := MasterKeyUse{ByKey: map[uint32]int{}}
	for _, q := range []string{
		`SELECT wrapped_key FROM recovery_keys WHERE wrapped_key IS NOT NULL`,
		`SELECT verification_key_wrap FROM devices`,
		`SELECT wrapped_key FROM seal_check`,
	} {
		rows, err := tx.QueryContext(ctx, q)
		if err != nil {
			return u, err
		}
		for rows.Next() {
			var wk []byte
			if err := rows.Scan(&wk); err != nil {
				rows.Close()
				return u, err
			}
			if id, err := seal.WrappingKeyID(wk); err == nil {
				u.ByKey[id]++
			} else {
				u.Unknown++
			}
		}
		if err := rows.Close(); err != nil {
			return u, err
		}
		if err := rows.Err(); err != nil {
			return u, err
		}
	}
	return u, nil
}

// RetireMasterKeys records the removal of the master keys ids from the key file, which remove
// does, in one transaction that first makes sure no sealed value is wrapped by any of them:
// writers wait meanwhile, so none can seal under an old key between the check and the removal.
// Errors: CodeConflict naming how many values still use which key (re-wrap first).
func (db *DB) RetireMasterKeys(ctx context.Context, o escrow.Origin, ids []uint32, remove func() error) error {
	return db.write(ctx, func(tx *sql.Tx) error {
		u, err := masterKeyUse(ctx, tx)
		if err != nil {
			return err
		}
		if n, used := u.UsedBy(ids); n > 0 || u.Unknown > 0 {
			var parts []string
			for _, id := range used {
				parts = append(parts, fmt.Sprintf("%d values are still wrapped by master key ID %d", u.ByKey[id], id))
			}
			if u.Unknown > 0 {
				parts = append(parts, fmt.Sprintf("%d values have a wrapping key that cannot be read", u.Unknown))
			}
			return escrow.Errorf(escrow.CodeConflict, "%s; nothing was retired: re-wrap them first with keyward master-key rewrap", strings.Join(parts, "; "))
		}
		if err := remove(); err != nil {
			return escrow.Wrap(escrow.CodeInternal, err, err.Error())
		}
		e := o.Event(escrow.ActionMasterKeyRetire, escrow.OutcomeSuccess)
		e.Detail = fmt.Sprintf("retired master key IDs %s; master key ID %d remains", joinIDs(ids), db.sealer.PrimaryKeyID())
		return db.appendEvent(ctx, tx, e)
	})
}

func joinIDs(ids []uint32) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprint(id)
	}
	return strings.Join(s, ", ")
}
