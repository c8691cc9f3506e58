package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/escrow"
)

// copyTables lists every table that holds an installation's state, parents before children,
// with its columns. The stored escrow status is copied with its rows (it is derived from the
// same snapshot); the counters of status_counts are kept by the triggers as the rows arrive. Sessions, single sign-ons in flight and rate-limit windows are not state
// worth moving: people sign in again.
var copyTables = []struct {
	name    string
	columns string
	bools   []string // columns that are BOOLEAN (SQLite hands them back as integers)
}{
	{"seal_check", "id, ciphertext, wrapped_key", nil},
	{"settings", "name, value", nil},
	{"users", "id, email, email_key, role, scope_tags, password_hash, created_at, disabled_at, sso_issuer, sso_subject, sso_link_allowed_at", nil},
	{"api_tokens", "id, user_id, name, secret_hash, created_at, revoked_at, last_used_at", nil},
	{"enrollment_tokens", "id, secret_hash, uses_left, expires_at, created_by, created_at, revoked_at", nil},
	{"devices", "id, name, owner_upn, owner_key, serial_number, os_version, token_id, token_hash, verification_key, verification_key_wrap, enrolled_at, last_seen_at, reported_at, retired_at, retired_by, retire_reason, disputed_at, disputed_by, dispute_reason, escrow_status, status_why, status_missing, status_since, status_until, recheck_at, listed_from, name_key", []string{"status_missing"}},
	{"device_tags", "device_id, tag", nil},
	{"volumes", "device_id, volume_id, mount_point, volume_type, protection_status, encryption_status, lock_status, present, missing_escrow_since, failure, failure_at, escrow_status, status_until", []string{"present"}},
	{"protectors", "device_id, volume_id, key_id, type", nil},
	{"recovery_keys", "id, device_id, key_id, volume_id, kind, status, verification, verified_at, ciphertext, wrapped_key, created_at, superseded_at, retain_until, last_accessed_at, access_count", nil},
	{"rotations", "id, device_id, volume_id, key_id, status, trigger_kind, reason, requested_by, requested_at, delivered_at, finished_at, new_key_id, message", nil},
	{"approvals", "id, device_id, requester, reason, ticket, status, created_at, expires_at, decided_by, decided_at, decision_reason, used_at", nil},
	{"audit_events", "seq, time, actor_type, actor_id, actor_name, action, device_id, key_id, source, reason, outcome, ip, user_agent, detail, ticket, hash", nil},
	// The receivers' cursors come along from the same snapshot as the trail, so a copy goes on
	// delivering where the original stood instead of sending the whole trail again; a lease
	// copied with them runs out like any other.
	{"delivery_cursors", "sink, seq, holder, lease_until, failing_since, updated_at", nil},
}

// CopyStats says how many rows of each table a copy moved.
type CopyStats map[string]int64

// CopyTo copies every row of this installation into dst, verbatim: IDs, sealed material (still
// sealed under the same master key) and the audit trail with its hashes, so the chain verifies
// on the other side. dst must hold no devices, users or audit events yet. It all happens in one
// transaction on dst, so a failed copy leaves dst as it was.
func (db *DB) CopyTo(ctx context.Context, dst *DB) (CopyStats, error) {
	return db.copyTo(ctx, dst, nil)
}

// MigrateTo copies the installation into dst as CopyTo does and records the copy as
// store.migrate in both audit trails: in this one before the copy (a copy of every sealed secret
// leaving the database is an access worth answering for, and with no record there is no copy),
// and in dst inside the copy's transaction, so the copied trail says where it came from. from
// and to name the two stores in the events; they must hold no secrets (no passwords in URLs).
// A copy that fails after the first record is recorded in this trail as an error.
func (db *DB) MigrateTo(ctx context.Context, dst *DB, o escrow.Origin, from, to string) (CopyStats, error) {
	e := o.Event(escrow.ActionStoreMigrate, escrow.OutcomeSuccess)
	e.Detail = "copying this installation to " + to
	if err := db.Record(ctx, e); err != nil {
		return nil, fmt.Errorf("the copy could not be recorded in the audit trail, so nothing was copied: %w", err)
	}
	stats, err := db.copyTo(ctx, dst, func(tx *sql.Tx) error {
		e := o.Event(escrow.ActionStoreMigrate, escrow.OutcomeSuccess)
		e.Detail = "copied from " + from
		return dst.appendEvent(ctx, tx, e)
	})
	if err != nil {
		fail := o.Event(escrow.ActionStoreMigrate, escrow.OutcomeError)
		fail.Detail = "the copy to " + to + " failed; the destination is unchanged"
		// The copy's error is what the caller must see; a failure to record it joins it.
		if rerr := db.Record(ctx, fail); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return stats, err
	}
	return stats, nil
}

// copyTo is CopyTo with a last step, run on dst inside the copy's transaction (nil for none).
func (db *DB) copyTo(ctx context.Context, dst *DB, last func(tx *sql.Tx) error) (CopyStats, error) {
	stats := CopyStats{}
	// dst takes the copied audit key inside the copy's transaction, for last's event, and
	// goes back to its own if the copy does not commit.
	var prevKey *audit.Key
	var swapped bool
	err := db.read(ctx, func(src *sql.Tx) error {
		return runTx(ctx, dst.rw, nil, func(tx *sql.Tx) error {
			for _, t := range []string{"users", "devices", "audit_events"} {
				var n int64
				if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+t).Scan(&n); err != nil {
					return err
				}
				if n > 0 {
					return escrow.Errorf(escrow.CodeConflict, "the destination already holds %s; copy into an empty database", t)
				}
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM seal_check`); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM settings`); err != nil {
				return err
			}
			for _, t := range copyTables {
				n, err := copyTable(ctx, src, tx, t.name, t.columns, t.bools)
				if err != nil {
					return fmt.Errorf("copy %s: %w", t.name, err)
				}
				stats[t.name] = n
			}
			var seq int64
			var hash, mac []byte
			if err := src.QueryRowContext(ctx, `SELECT seq, hash, mac FROM audit_head WHERE id = 1`).Scan(&seq, &hash, &mac); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE audit_head SET seq = $1, hash = $2, mac = $3 WHERE id = 1`, seq, hash, mac); err != nil {
				return err
			}
			if dst.dialect == "postgres" {
				// Explicit IDs bypass the identity sequence; move it past them.
				if _, err := tx.ExecContext(ctx, `SELECT setval(pg_get_serial_sequence('recovery_keys', 'id'), COALESCE((SELECT MAX(id) FROM recovery_keys), 0) + 1, false)`); err != nil {
					return err
				}
			}
			if dst.sealer != nil {
				// The copied check value holds the source's audit key, which dst goes on
				// with (keying the chain now if the source's was not keyed yet).
				k, err := ensureAuditKey(ctx, tx, dst.sealer, dst.Rand)
				if err != nil {
					return err
				}
				prevKey, swapped = dst.auditKey.Swap(k), true
			}
			if last != nil {
				return last(tx)
			}
			return nil
		})
	})
	if err != nil && swapped {
		dst.auditKey.Store(prevKey)
	}
	return stats, err
}

func copyTable(ctx context.Context, src, dst *sql.Tx, table, columns string, bools []string) (int64, error) {
	names := strings.Split(columns, ", ")
	isBool := make([]bool, len(names))
	for i, n := range names {
		for _, b := range bools {
			isBool[i] = isBool[i] || n == b
		}
	}
	rows, err := src.QueryContext(ctx, `SELECT `+columns+` FROM `+table)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	insert := `INSERT INTO ` + table + ` (` + columns + `) VALUES (` + placeholders(1, len(names)) + `)`
	vals := make([]any, len(names))
	ptrs := make([]any, len(names))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var n int64
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return n, err
		}
		for i, v := range vals {
			if x, ok := v.(int64); ok && isBool[i] {
				vals[i] = x != 0
			}
		}
		if _, err := dst.ExecContext(ctx, insert, vals...); err != nil {
			return n, err
		}
		n++
	}
	return n, rows.Err()
}
