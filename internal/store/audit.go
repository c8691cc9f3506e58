package store

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/seal"
)

// appendEvent adds an event to the audit chain inside tx. It locks the chain head, so events
// get consecutive seq numbers in commit order, and the event commits or rolls back with the
// change it records. The event's hash is the keyed chain's MAC, and the head is checked before
// it is extended and authenticated again after: a head moved by someone without the key is
// never built on (the append fails, and with it the change it records).
func (db *DB) appendEvent(ctx context.Context, tx dbtx, e escrow.AuditEvent) error {
	e = cleanEvent(e)
	k := db.auditKey.Load()
	if k == nil {
		return errNoAuditKey
	}
	// In a write batch the batch holds the head (commit.go): it was read and locked when the
	// batch began and is written once before the commit.
	b := db.batchHeadOf(tx)
	var head audit.Head
	if b != nil {
		if !b.checked {
			if !k.CheckHead(b.read) {
				return errHeadForged
			}
			b.checked = true
		}
		head = b.at
	} else {
		// A transaction of its own (a migration, a copy). On PostgreSQL the UPDATE takes the
		// row lock first (SELECT ... FOR UPDATE is not portable); concurrent appenders queue
		// on it and each sees the head its predecessor left. SQLite's write transactions are
		// serial, so the lock is the transaction's own.
		if db.dialect == "postgres" {
			if _, err := tx.ExecContext(ctx, `UPDATE audit_head SET seq = seq WHERE id = 1`); err != nil {
				return err
			}
		}
		if err := tx.QueryRowContext(ctx, `SELECT seq, hash, mac FROM audit_head WHERE id = 1`).Scan(&head.Seq, &head.Hash, &head.MAC); err != nil {
			return err
		}
		if !k.CheckHead(head) {
			return errHeadForged
		}
	}
	e.Seq = head.Seq + 1
	e.Time = db.Now().UTC().Truncate(time.Microsecond)
	e.Hash = audit.MAC(k.MAC, head.Hash, e)
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit_events
		(seq, time, actor_type, actor_id, actor_name, action, device_id, key_id, source, reason, outcome, ip, user_agent, detail, ticket, hash)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
		e.Seq, micros(e.Time), string(e.Actor.Type), e.Actor.ID, e.Actor.Name, e.Action, e.DeviceID, e.KeyID,
		string(e.Source), e.Reason, string(e.Outcome), e.IP, e.UserAgent, e.Detail, e.Ticket, e.Hash); err != nil {
		return err
	}
	next := audit.Head{Seq: e.Seq, Hash: e.Hash, MAC: audit.HeadMAC(k.MAC, e.Seq, e.Hash)}
	if b != nil {
		b.at = next
		return nil
	}
	_, err := tx.ExecContext(ctx, `UPDATE audit_head SET seq = $1, hash = $2, mac = $3 WHERE id = 1`, next.Seq, next.Hash, next.MAC)
	return err
}

// headSeq is the seq of the chain's last event as tx sees it, its own appends included.
func (db *DB) headSeq(ctx context.Context, tx dbtx) (int64, error) {
	if b := db.batchHeadOf(tx); b != nil {
		return b.at.Seq, nil
	}
	var seq int64
	err := tx.QueryRowContext(ctx, `SELECT seq FROM audit_head WHERE id = 1`).Scan(&seq)
	return seq, err
}

// Record appends one event on its own, for actions whose only effect is the record itself
// (a denied request, a failed sign-in).
func (db *DB) Record(ctx context.Context, e escrow.AuditEvent) error {
	return db.write(ctx, func(tx *sql.Tx) error { return db.appendEvent(ctx, tx, e) })
}

const auditColumns = `seq, time, actor_type, actor_id, actor_name, action, device_id, key_id, source, reason, outcome, ip, user_agent, detail, ticket, hash`

// ListAudit calls fn for each event matching f, newest first, from one consistent snapshot, and
// without holding more than one event in memory: exports stream however long the log.
func (db *DB) ListAudit(ctx context.Context, f escrow.AuditFilter, fn func(escrow.AuditEvent) error) error {
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	if f.DeviceID != "" {
		add("device_id = ?", f.DeviceID)
	}
	if f.KeyID != "" {
		add("key_id = ?", f.KeyID)
	}
	if f.Actor != "" {
		args = append(args, f.Actor)
		n := "$" + strconv.Itoa(len(args))
		where = append(where, "(actor_id = "+n+" OR actor_name = "+n+")")
	}
	if f.Action != "" {
		add("action = ?", f.Action)
	}
	if f.Source != "" {
		add("source = ?", f.Source)
	}
	if f.Outcome != "" {
		add("outcome = ?", f.Outcome)
	}
	if f.Ticket != "" {
		add("ticket = ?", f.Ticket)
	}
	if !f.Since.IsZero() {
		add("time >= ?", micros(f.Since))
	}
	if !f.Until.IsZero() {
		add("time < ?", micros(f.Until))
	}
	if f.Before > 0 {
		add("seq < ?", f.Before)
	}
	query := `SELECT ` + auditColumns + ` FROM audit_events`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY seq DESC"
	if f.Limit > 0 {
		query += " LIMIT " + strconv.Itoa(f.Limit)
	}
	return db.read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			e, err := scanEvent(rows)
			if err != nil {
				return err
			}
			if err := fn(e); err != nil {
				return escrow.Wrap(escrow.CodeInternal, err, "audit listing stopped")
			}
		}
		return rows.Err()
	})
}

// VerifyAudit walks the whole chain in seq order with the store's master key. It returns the
// number of events checked and, if a link or the head is broken, an *audit.BrokenError naming
// the first bad seq (Truncated when the end was cut off).
func (db *DB) VerifyAudit(ctx context.Context) (int64, error) {
	return db.verifyAudit(ctx, db.sealer)
}

// verifyAudit is VerifyAudit with the master key given: a backup is verified with the key of
// the command checking it. The audit key is read from the same snapshot as the events.
func (db *DB) verifyAudit(ctx context.Context, sealer *seal.Sealer) (int64, error) {
	if sealer == nil {
		return 0, escrow.Errorf(escrow.CodeInternal, "verifying the audit trail needs the master key")
	}
	var checked int64
	var chainErr error
	err := db.read(ctx, func(tx *sql.Tx) error {
		k, err := auditKeyIn(ctx, tx, sealer)
		if errors.Is(err, sql.ErrNoRows) {
			return escrow.Errorf(escrow.CodeInvalid, "the database holds no master key check value, so its audit chain cannot be verified")
		}
		if errors.Is(err, seal.ErrWrongMasterKey) {
			return escrow.Errorf(escrow.CodeInvalid, "the master key does not open this database's check value, which holds the audit chain's key")
		}
		if err != nil {
			return err
		}
		var head audit.Head
		if err := tx.QueryRowContext(ctx, `SELECT seq, hash, mac FROM audit_head WHERE id = 1`).Scan(&head.Seq, &head.Hash, &head.MAC); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT `+auditColumns+` FROM audit_events ORDER BY seq`)
		if err != nil {
			return err
		}
		defer rows.Close()
		var scanErr error
		next := func() (escrow.AuditEvent, bool, error) {
			if !rows.Next() {
				return escrow.AuditEvent{}, false, rows.Err()
			}
			e, err := scanEvent(rows)
			if err != nil {
				scanErr = err
			}
			return e, err == nil, err
		}
		if k != nil {
			checked, chainErr = audit.VerifyKeyed(*k, head, next)
			return scanErr
		}
		// Not keyed yet: a database (or a backup of one) that no version keying the chain has
		// opened with the master key. Its plain chain is all there is to check.
		checked, chainErr = audit.Verify(next)
		if scanErr != nil {
			return scanErr
		}
		// Events cut off the end of the log would leave a chain that verifies: the head
		// remembers how long the chain must be.
		if chainErr == nil && head.Seq != checked {
			chainErr = &audit.BrokenError{Seq: checked + 1, Truncated: head.Seq > checked,
				Problem: "event missing from the end of the log (head is at seq " + strconv.FormatInt(head.Seq, 10) + ")"}
		}
		return nil
	})
	if err != nil {
		return checked, err
	}
	return checked, chainErr
}

type scanner interface{ Scan(...any) error }

func scanEvent(s scanner) (escrow.AuditEvent, error) {
	var e escrow.AuditEvent
	var t int64
	var actorType, source, outcome string
	err := s.Scan(&e.Seq, &t, &actorType, &e.Actor.ID, &e.Actor.Name, &e.Action, &e.DeviceID, &e.KeyID,
		&source, &e.Reason, &outcome, &e.IP, &e.UserAgent, &e.Detail, &e.Ticket, &e.Hash)
	e.Time = time.UnixMicro(t).UTC()
	e.Actor.Type, e.Source, e.Outcome = escrow.ActorType(actorType), escrow.Source(source), escrow.Outcome(outcome)
	return e, err
}

// Cursors are opaque to clients; they are base64 of the position, so a client cannot mistake
// them for something it should build itself.
func encodeCursor(parts ...string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strings.Join(parts, "\x00")))
}

func decodeCursor(c string, n int) ([]string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return nil, errBadCursor
	}
	parts := strings.Split(string(b), "\x00")
	if len(parts) != n {
		return nil, errBadCursor
	}
	return parts, nil
}

var errBadCursor = escrow.Errorf(escrow.CodeInvalid, "cursor: not a cursor this listing gave out")
