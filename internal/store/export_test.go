package store

import (
	"context"
	"database/sql"
	"database/sql/driver"

	"github.com/keyward/keyward/internal/escrow"
)

// SetRewrapHook makes RewrapMasterKey call f between reading each batch and writing it.
func SetRewrapHook(db *DB, f func()) { db.rewrapHook = f }

// Write runs fn through the store's write path, as the services do.
func Write(db *DB, ctx context.Context, fn func(tx *sql.Tx) error) error { return db.write(ctx, fn) }

// AppendEvent appends e to the audit chain inside tx, as the services do.
func AppendEvent(db *DB, ctx context.Context, tx *sql.Tx, e escrow.AuditEvent) error {
	return db.appendEvent(ctx, tx, e)
}

// SetBeforeCommit makes every write batch call f with its transaction just before committing.
func SetBeforeCommit(db *DB, f func(tx *sql.Tx)) { db.commit.beforeCommit = f }

// QueuedWrites is the number of write requests waiting for a batch.
func QueuedWrites(db *DB) int {
	db.commit.mu.Lock()
	defer db.commit.mu.Unlock()
	return len(db.commit.queue)
}

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

// Statement is one SQL statement the store sent, with its arguments.
type Statement struct {
	Query string
	Args  []any
}

// TraceStatements makes the pools opened until the returned stop is called record every
// statement they send to record.
func TraceStatements(record func(Statement)) (stop func()) {
	wrapConnector = func(c driver.Connector) driver.Connector { return tracingConnector{c, record} }
	return func() { wrapConnector = nil }
}

type tracingConnector struct {
	driver.Connector
	record func(Statement)
}

func (c tracingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return tracingConn{conn, c.record}, nil
}

// tracingConn forwards everything to the driver's connection and records the statements.
type tracingConn struct {
	driver.Conn
	record func(Statement)
}

func values(args []driver.NamedValue) []any {
	out := make([]any, len(args))
	for i, a := range args {
		out[i] = a.Value
	}
	return out
}

func (c tracingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	q, ok := c.Conn.(driver.QueryerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	c.record(Statement{query, values(args)})
	return q.QueryContext(ctx, query, args)
}

func (c tracingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	e, ok := c.Conn.(driver.ExecerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	c.record(Statement{query, values(args)})
	return e.ExecContext(ctx, query, args)
}

func (c tracingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if b, ok := c.Conn.(driver.ConnBeginTx); ok {
		return b.BeginTx(ctx, opts)
	}
	//lint:ignore SA1019 the same fallback database/sql itself takes
	return c.Conn.Begin()
}

func (c tracingConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	c.record(Statement{Query: query})
	if p, ok := c.Conn.(driver.ConnPrepareContext); ok {
		return p.PrepareContext(ctx, query)
	}
	return c.Conn.Prepare(query)
}

func (c tracingConn) Ping(ctx context.Context) error {
	if p, ok := c.Conn.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

func (c tracingConn) ResetSession(ctx context.Context) error {
	if r, ok := c.Conn.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c tracingConn) CheckNamedValue(v *driver.NamedValue) error {
	if n, ok := c.Conn.(driver.NamedValueChecker); ok {
		return n.CheckNamedValue(v)
	}
	return driver.ErrSkip
}
