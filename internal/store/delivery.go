package store

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// The delivery of the audit trail to outside receivers (internal/delivery) keeps, per sink, a
// cursor and a lease in delivery_cursors. These writes are operational, not security events:
// they are not audited (a delivery recording itself would never catch up), and they change no
// event. The trail itself is read through the read pool, never holding the writer.

// AuditAfter returns up to limit events with a seq above after, oldest first, from one
// snapshot. Errors: CodeUnavailable.
func (db *DB) AuditAfter(ctx context.Context, after int64, limit int) ([]escrow.AuditEvent, error) {
	if limit <= 0 {
		return nil, escrow.Errorf(escrow.CodeInvalid, "limit: must be positive")
	}
	var out []escrow.AuditEvent
	err := db.read(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = queryAll(ctx, tx, scanEvent, `SELECT `+auditColumns+` FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2`, after, limit)
		return err
	})
	return out, err
}

// TakeDeliveryLease makes holder the one server delivering sink until ttl from now, if no other
// server holds a lease that is still running, and returns the sink's state. A sink seen for the
// first time starts at the beginning of the trail, or with atHead after its newest event. held
// is false when another server holds the lease. Errors: CodeUnavailable.
func (db *DB) TakeDeliveryLease(ctx context.Context, sink, holder string, ttl time.Duration, atHead bool) (st escrow.DeliveryState, held bool, err error) {
	err = db.write(ctx, func(tx *sql.Tx) error {
		now := micros(db.Now())
		start := int64(0)
		if atHead {
			var err error
			if start, err = db.headSeq(ctx, tx); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO delivery_cursors (sink, seq, holder, lease_until, failing_since, updated_at)
			VALUES ($1, $2, '', 0, NULL, $3) ON CONFLICT (sink) DO NOTHING`, sink, start, now); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE delivery_cursors SET holder = $2, lease_until = $3, updated_at = $4
			WHERE sink = $1 AND (holder = $2 OR lease_until <= $4)`, sink, holder, now+ttl.Microseconds(), now)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		held = n == 1
		st, err = deliveryRow(ctx, tx, sink)
		return err
	})
	return st, held, err
}

// AdvanceDelivery moves sink's cursor forward to seq (never back), clears its failure mark and
// renews holder's lease for ttl. It returns false, changing nothing, when holder no longer
// holds the lease: another server took the sink over and delivers from the stored cursor.
// Errors: CodeUnavailable.
func (db *DB) AdvanceDelivery(ctx context.Context, sink, holder string, seq int64, ttl time.Duration) (bool, error) {
	now := micros(db.Now())
	return db.updateHeld(ctx, `UPDATE delivery_cursors
		SET seq = CASE WHEN seq < $3 THEN $3 ELSE seq END, failing_since = NULL, lease_until = $4, updated_at = $5
		WHERE sink = $1 AND holder = $2`, sink, holder, seq, now+ttl.Microseconds(), now)
}

// MarkDeliveryFailing records that holder's last attempt to deliver to sink failed (keeping the
// start of a run of failures) and renews its lease for ttl. It returns false when holder no
// longer holds the lease. Errors: CodeUnavailable.
func (db *DB) MarkDeliveryFailing(ctx context.Context, sink, holder string, ttl time.Duration) (bool, error) {
	now := micros(db.Now())
	return db.updateHeld(ctx, `UPDATE delivery_cursors
		SET failing_since = COALESCE(failing_since, $3), lease_until = $4, updated_at = $3
		WHERE sink = $1 AND holder = $2`, sink, holder, now, now+ttl.Microseconds())
}

// updateHeld runs one UPDATE of a sink's row guarded by its holder, in a write transaction of
// its own, and reports whether it changed the row (the holder still holds the lease).
func (db *DB) updateHeld(ctx context.Context, query string, args ...any) (bool, error) {
	var held bool
	err := db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, query, args...)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		held = n == 1
		return err
	})
	return held, err
}

// ReleaseDeliveryLease ends holder's lease on sink at once, so that another server can take
// the sink over without waiting for it to run out (a server shutting down).
// Errors: CodeUnavailable.
func (db *DB) ReleaseDeliveryLease(ctx context.Context, sink, holder string) error {
	return db.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE delivery_cursors SET lease_until = 0, updated_at = $3 WHERE sink = $1 AND holder = $2`,
			sink, holder, micros(db.Now()))
		return err
	})
}

// DeliveryStates returns the state of each of sinks, in their order, from one snapshot: the
// cursor, the lease, the failure mark, the trail's head and the time of the oldest event not
// delivered yet. A sink no server has started has Exists false and its cursor at 0.
// Errors: CodeUnavailable.
func (db *DB) DeliveryStates(ctx context.Context, sinks []string) ([]escrow.DeliveryState, error) {
	var out []escrow.DeliveryState
	err := db.read(ctx, func(tx *sql.Tx) error {
		out = out[:0]
		var head int64
		if err := tx.QueryRowContext(ctx, `SELECT seq FROM audit_head WHERE id = 1`).Scan(&head); err != nil {
			return err
		}
		for _, sink := range sinks {
			st, err := deliveryRow(ctx, tx, sink)
			if err != nil {
				return err
			}
			st.Head = head
			if st.Cursor < head {
				var t int64
				err := tx.QueryRowContext(ctx, `SELECT time FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT 1`, st.Cursor).Scan(&t)
				if err != nil && !errors.Is(err, sql.ErrNoRows) {
					return err
				}
				if err == nil {
					st.OldestPending = time.UnixMicro(t).UTC()
				}
			}
			out = append(out, st)
		}
		return nil
	})
	return out, err
}

// deliveryRow reads sink's row; a missing row is a state with Exists false.
func deliveryRow(ctx context.Context, tx dbtx, sink string) (escrow.DeliveryState, error) {
	st := escrow.DeliveryState{Sink: sink}
	var lease int64
	var failing sql.NullInt64
	err := tx.QueryRowContext(ctx, `SELECT seq, holder, lease_until, failing_since FROM delivery_cursors WHERE sink = $1`, sink).
		Scan(&st.Cursor, &st.Holder, &lease, &failing)
	if errors.Is(err, sql.ErrNoRows) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	st.Exists = true
	st.LeaseUntil = time.UnixMicro(lease).UTC()
	st.FailingSince = fromMicros(failing)
	return st, nil
}
