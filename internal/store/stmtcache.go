package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"strings"
)

// SQLite compiles a statement before it runs it: parsing and planning take about a third of the
// CPU of a short request (a view runs some twenty statements). The SQLite driver compiles every
// statement sent to a connection anew and frees it after, so a connection here keeps its
// compiled statements by their SQL text and runs them again; SQLite recompiles a kept statement
// itself when the schema changes. PostgreSQL's driver (pgx) keeps them already.

// stmtCacheSize bounds the statements one connection keeps. The store's SQL is a fixed set of
// texts, except listings built from their filters; past the bound, statements are compiled and
// freed as the driver does.
const stmtCacheSize = 512

// stmtCachingConnector gives each connection of a pool a statement cache.
type stmtCachingConnector struct{ driver.Connector }

func (c stmtCachingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &stmtCachingConn{Conn: conn, stmts: make(map[string]*cachedStmt)}, nil
}

// cachedStmt is a compiled statement and whether rows of it are open: while they are, a second
// use of the same text (a query run inside a loop over the first's rows) gets a statement of its
// own.
type cachedStmt struct {
	stmt interface {
		driver.Stmt
		driver.StmtExecContext
		driver.StmtQueryContext
	}
	busy bool
}

// stmtCachingConn is used by one goroutine at a time, as database/sql uses every connection
// (rows are closed under the same connection lock), so its map needs no lock of its own.
type stmtCachingConn struct {
	driver.Conn
	stmts map[string]*cachedStmt
}

// cached returns the kept statement for query, compiling it on first use, or nil when it cannot
// be kept: a script of several statements, a full cache, or one already in use.
func (c *stmtCachingConn) cached(ctx context.Context, query string) (*cachedStmt, error) {
	if s, ok := c.stmts[query]; ok {
		if s.busy {
			return nil, nil
		}
		return s, nil
	}
	if len(c.stmts) >= stmtCacheSize || strings.Contains(strings.TrimRight(strings.TrimSpace(query), ";"), ";") {
		return nil, nil
	}
	p, ok := c.Conn.(driver.ConnPrepareContext)
	if !ok {
		return nil, nil
	}
	st, err := p.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	full, ok := st.(interface {
		driver.Stmt
		driver.StmtExecContext
		driver.StmtQueryContext
	})
	if !ok {
		return nil, errors.Join(errors.New("the SQLite driver's statements cannot run with a context"), st.Close())
	}
	s := &cachedStmt{stmt: full}
	c.stmts[query] = s
	return s, nil
}

func (c *stmtCachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	s, err := c.cached(ctx, query)
	if err != nil {
		return nil, err
	}
	if s == nil {
		e, ok := c.Conn.(driver.ExecerContext)
		if !ok {
			return nil, driver.ErrSkip
		}
		return e.ExecContext(ctx, query, args)
	}
	return s.stmt.ExecContext(ctx, args)
}

func (c *stmtCachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	s, err := c.cached(ctx, query)
	if err != nil {
		return nil, err
	}
	if s == nil {
		q, ok := c.Conn.(driver.QueryerContext)
		if !ok {
			return nil, driver.ErrSkip
		}
		return q.QueryContext(ctx, query, args)
	}
	rows, err := s.stmt.QueryContext(ctx, args)
	if err != nil {
		return nil, err
	}
	s.busy = true
	return &cachedRows{Rows: rows, stmt: s}, nil
}

// forget frees the kept statements not in use, so that the next use of each compiles it
// again, with the statistics as they are now.
func (c *stmtCachingConn) forget() error {
	var errs []error
	for q, s := range c.stmts {
		if !s.busy {
			errs = append(errs, s.stmt.Close())
			delete(c.stmts, q)
		}
	}
	return errors.Join(errs...)
}

// forgetStatements makes the pool's connection (the writer has one) compile its statements
// again: SQLite plans a statement when it compiles it, and a kept one keeps the plan it got
// with the statistics of its day.
func forgetStatements(ctx context.Context, pool *sql.DB) error {
	conn, err := pool.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		if c, ok := dc.(*stmtCachingConn); ok {
			return c.forget()
		}
		return nil
	})
}

// Close frees the kept statements, then the connection.
func (c *stmtCachingConn) Close() error {
	var errs []error
	for q, s := range c.stmts {
		errs = append(errs, s.stmt.Close())
		delete(c.stmts, q)
	}
	return errors.Join(append(errs, c.Conn.Close())...)
}

func (c *stmtCachingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if b, ok := c.Conn.(driver.ConnBeginTx); ok {
		return b.BeginTx(ctx, opts)
	}
	//lint:ignore SA1019 the same fallback database/sql itself takes
	return c.Conn.Begin()
}

func (c *stmtCachingConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	if p, ok := c.Conn.(driver.ConnPrepareContext); ok {
		return p.PrepareContext(ctx, query)
	}
	return c.Conn.Prepare(query)
}

func (c *stmtCachingConn) Ping(ctx context.Context) error {
	if p, ok := c.Conn.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

func (c *stmtCachingConn) ResetSession(ctx context.Context) error {
	if r, ok := c.Conn.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c *stmtCachingConn) IsValid() bool {
	if v, ok := c.Conn.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

// cachedRows hands its statement back when closed (the driver resets it then).
type cachedRows struct {
	driver.Rows
	stmt *cachedStmt
}

func (r *cachedRows) Close() error {
	err := r.Rows.Close()
	r.stmt.busy = false
	return err
}
