package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// countingConnector counts the statements the SQLite driver compiles.
type countingConnector struct {
	driver.Connector
	prepared *atomic.Int64
}

func (c countingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	return countingConn{conn, c.prepared}, err
}

type countingConn struct {
	driver.Conn
	prepared *atomic.Int64
}

func (c countingConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	c.prepared.Add(1)
	return c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
}

// The driver's own one-off path, as the SQLite driver has it: not counted.
func (c countingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	return c.Conn.(driver.QueryerContext).QueryContext(ctx, query, args)
}

func (c countingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	return c.Conn.(driver.ExecerContext).ExecContext(ctx, query, args)
}

func openCachingPool(t *testing.T) (*sql.DB, *atomic.Int64) {
	t.Helper()
	plain, err := sql.Open("sqlite", "")
	if err != nil {
		t.Fatal(err)
	}
	drv := plain.Driver()
	plain.Close()
	prepared := new(atomic.Int64)
	dsn := "file:" + filepath.Join(t.TempDir(), "cache.db") + "?_pragma=journal_mode(WAL)"
	pool := sql.OpenDB(stmtCachingConnector{countingConnector{dsnConnector{drv, dsn}, prepared}})
	pool.SetMaxOpenConns(1)
	t.Cleanup(func() { pool.Close() })
	if _, err := pool.Exec(`CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := pool.Exec(`INSERT INTO t (id, name) VALUES ($1, $2)`, i, fmt.Sprint("n", i)); err != nil {
			t.Fatal(err)
		}
	}
	return pool, prepared
}

func TestStatementCacheCompilesOnce(t *testing.T) {
	pool, prepared := openCachingPool(t)
	before := prepared.Load()
	for i := range 100 {
		var name string
		if err := pool.QueryRow(`SELECT name FROM t WHERE id = $1`, i%5).Scan(&name); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprint("n", i%5); name != want {
			t.Fatalf("run %d: got %q, want %q", i, name, want)
		}
		if _, err := pool.Exec(`UPDATE t SET name = name WHERE id = $1`, i%5); err != nil {
			t.Fatal(err)
		}
	}
	if n := prepared.Load() - before; n != 2 {
		t.Errorf("two statements run 100 times each were compiled %d times, want 2", n)
	}
}

// A query run again while the rows of its first run are open (a loop over rows that asks the
// same question) must get a statement of its own, not reset the first one under its rows.
func TestStatementCacheNestedUse(t *testing.T) {
	pool, _ := openCachingPool(t)
	tx, err := pool.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	const q = `SELECT id, name FROM t WHERE id >= $1 ORDER BY id`
	outer, err := tx.Query(q, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for outer.Next() {
		var id int
		var name string
		if err := outer.Scan(&id, &name); err != nil {
			t.Fatal(err)
		}
		inner, err := tx.Query(q, id)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for inner.Next() {
			n++
		}
		if err := inner.Close(); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s:%d", name, n))
	}
	if err := outer.Err(); err != nil {
		t.Fatal(err)
	}
	outer.Close()
	want := "[n0:5 n1:4 n2:3 n3:2 n4:1]"
	if fmt.Sprint(got) != want {
		t.Errorf("nested runs of one query gave %v, want %s", got, want)
	}
	// Both statements are free again: the text runs as before.
	var n int
	if err := tx.QueryRow(`SELECT count(*) FROM t WHERE id >= $1`, 3).Scan(&n); err != nil || n != 2 {
		t.Errorf("count after nesting: %d, %v", n, err)
	}
}

// A kept statement follows the schema: SQLite compiles it again after a change.
func TestStatementCacheFollowsSchema(t *testing.T) {
	pool, _ := openCachingPool(t)
	const q = `SELECT * FROM t WHERE id = $1`
	cols := func() int {
		rows, err := pool.Query(q, 1)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		c, err := rows.Columns()
		if err != nil {
			t.Fatal(err)
		}
		return len(c)
	}
	if n := cols(); n != 2 {
		t.Fatalf("columns before: %d", n)
	}
	if _, err := pool.Exec(`ALTER TABLE t ADD COLUMN note TEXT`); err != nil {
		t.Fatal(err)
	}
	if n := cols(); n != 3 {
		t.Errorf("columns after ALTER TABLE: %d, want 3", n)
	}
}

// Past its bound the cache compiles and frees statements as the driver does, and keeps
// answering correctly.
func TestStatementCacheBound(t *testing.T) {
	pool, prepared := openCachingPool(t)
	for i := range stmtCacheSize + 50 {
		var n int
		if err := pool.QueryRow(fmt.Sprintf(`SELECT count(*) + %d FROM t`, i)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 5+i {
			t.Fatalf("query %d: %d", i, n)
		}
	}
	if n := prepared.Load(); n != stmtCacheSize {
		t.Errorf("%d statements compiled to be kept, want %d", n, stmtCacheSize)
	}
	conn, err := pool.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Raw(func(dc any) error {
		if n := len(dc.(*stmtCachingConn).stmts); n != stmtCacheSize {
			t.Errorf("the connection keeps %d statements, want %d", n, stmtCacheSize)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	// Scripts of several statements are never kept, and run whole.
	if _, err := pool.Exec(`UPDATE t SET name = 'a' WHERE id = 0; UPDATE t SET name = 'b' WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	var a, b string
	if err := pool.QueryRow(`SELECT (SELECT name FROM t WHERE id = 0), (SELECT name FROM t WHERE id = 1)`).Scan(&a, &b); err != nil || a != "a" || b != "b" {
		t.Errorf("script: %q %q %v", a, b, err)
	}
}

// After the statistics change, forgetStatements makes the writer compile its statements again
// (with the plans the new statistics give); a statement whose rows are open is kept.
func TestStatementCacheForget(t *testing.T) {
	pool, prepared := openCachingPool(t)
	ctx := context.Background()
	run := func() {
		var n int
		if err := pool.QueryRow(`SELECT count(*) FROM t WHERE id > $1`, 0).Scan(&n); err != nil || n != 4 {
			t.Fatalf("count: %d, %v", n, err)
		}
	}
	run()
	before := prepared.Load()
	run()
	if prepared.Load() != before {
		t.Fatal("a kept statement was compiled again")
	}
	if err := forgetStatements(ctx, pool); err != nil {
		t.Fatal(err)
	}
	run()
	if prepared.Load() != before+1 {
		t.Errorf("after forgetStatements the statement was compiled %d times, want once", prepared.Load()-before)
	}
}
