// Package store keeps Keyward's state in SQL: the embedded SQLite database by default, or
// PostgreSQL shared by several servers. It is also where the escrow services live, because each of them is one transaction: a disclosure
// and its audit event, an escrow and the status it changes, a rotation's new key and the old
// key's supersession commit together or not at all.
//
// SQL here is written to run on PostgreSQL as well: numbered placeholders, BIGINT times in
// microseconds, BLOB/BYTEA for bytes, no dialect functions in queries.
package store

import (
	"cmp"
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/seal"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

//go:embed migrations
var migrations embed.FS

// defaultLimit is the page size of a listing that asks for none (SPEC §7).
const defaultLimit = 100

// DatabaseFile is the name of the SQLite database inside the data directory.
const DatabaseFile = "keyward.db"

// DB is Keyward's storage and the services built on it. It is safe for concurrent use.
type DB struct {
	// rw takes writes; SQLite has one writer at a time, and every transaction here begins
	// IMMEDIATE so that a read-then-write transaction never has to upgrade its lock (an upgrade
	// that can fail with SQLITE_BUSY whatever the busy timeout).
	rw *sql.DB
	// ro serves read-only work (listings, exports) from WAL snapshots without blocking writers.
	// On PostgreSQL both are one pool.
	ro *sql.DB
	// dialect is "sqlite" or "postgres".
	dialect string

	// sealer seals and opens key material; nil for admin commands that never touch it.
	sealer *seal.Sealer
	// Now is the clock; tests replace it to move through grace periods and retention.
	Now func() time.Time
	// Rand is the source of randomness for IDs and tokens.
	Rand io.Reader

	// auditKey keys the audit chain (auditkey.go); nil on a store opened without the master
	// key, which can read but not append.
	auditKey atomic.Pointer[audit.Key]
	// commit queues write requests so that concurrent ones share a transaction (commit.go).
	commit committer

	// optimizedAt is when optimize last ran (Unix microseconds, the store's clock).
	optimizedAt atomic.Int64

	// rewrapHook runs between reading a batch of values to re-wrap and writing them; tests
	// use it to write behind the re-wrap's back as a server would.
	rewrapHook func()
}

// Options configure Open.
type Options struct {
	// Sealer seals key material. Admin commands that manage users and tokens may leave it nil.
	Sealer *seal.Sealer
	Now    func() time.Time
	Rand   io.Reader
}

// OpenSQLite opens (creating if needed) the SQLite database in dataDir and brings its schema
// up to date.
func OpenSQLite(ctx context.Context, dataDir string, opts Options) (*DB, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	if err := CheckDataDir(dataDir); err != nil {
		return nil, err
	}
	path := filepath.Join(dataDir, DatabaseFile)
	if err := restrictSQLiteFiles(path); err != nil {
		return nil, err
	}
	return openSQLiteFile(ctx, path, "WAL", opts)
}

// openSQLiteFile opens the SQLite database file at path with the given journal mode: WAL for
// a live installation, DELETE for a backup, which must be one self-contained file.
func openSQLiteFile(ctx context.Context, path, journal string, opts Options) (*DB, error) {
	// Pragmas are per connection, so they go in the DSN that every pooled connection opens with.
	pragmas := []string{"journal_mode(" + journal + ")", "synchronous(FULL)", "foreign_keys(1)", "busy_timeout(10000)",
		// Purged key material must be gone from the file, not left in free pages.
		"secure_delete(ON)"}
	q := url.Values{"_pragma": pragmas}
	q.Set("_txlock", "immediate")
	// The writer's page cache: a write touches a few pages of each index it inserts into, at
	// random places in a large fleet, and SQLite's default 2 MiB would read most of them back
	// from the file for every request.
	q.Add("_pragma", "cache_size(-65536)")
	rw, err := openPool("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	rw.SetMaxOpenConns(1)
	rw.SetConnMaxIdleTime(0)

	q = url.Values{"_pragma": append(pragmas, "query_only(1)")}
	q.Set("_txlock", "deferred")
	ro, err := openPool("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		rw.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	// Readers keep their connections (a new one reads the schema and the statistics, and
	// compiles its statements again), and renew them now and then so statistics refreshed by a
	// writer reach them.
	ro.SetMaxOpenConns(8)
	ro.SetMaxIdleConns(8)
	ro.SetConnMaxLifetime(10 * time.Minute)

	db := &DB{rw: rw, ro: ro, dialect: "sqlite", sealer: opts.Sealer, Now: opts.Now, Rand: opts.Rand}
	if err := db.init(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("database %s: %w", path, err)
	}
	return db, nil
}

// OpenPostgres opens the PostgreSQL database at url (postgres://...) and brings its schema up
// to date. Several servers may share the database.
func OpenPostgres(ctx context.Context, url string, opts Options) (*DB, error) {
	pool, err := openPool("pgx", url)
	if err != nil {
		return nil, fmt.Errorf("open PostgreSQL: %w", err)
	}
	// Every write transaction holds the audit-chain head, so writes are one at a time per
	// database; the pool mostly serves concurrent reads. Bounded so that many servers on one
	// database stay well inside max_connections.
	pool.SetMaxOpenConns(16)
	pool.SetMaxIdleConns(8)
	pool.SetConnMaxLifetime(30 * time.Minute)
	pool.SetConnMaxIdleTime(5 * time.Minute)
	db := &DB{rw: pool, ro: pool, dialect: "postgres", sealer: opts.Sealer, Now: opts.Now, Rand: opts.Rand}
	if err := db.init(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("PostgreSQL: %w", err)
	}
	return db, nil
}

// Open opens the database named by url (postgres://... or postgresql://...) or, when url is
// empty, the SQLite database in dataDir.
func Open(ctx context.Context, url, dataDir string, opts Options) (*DB, error) {
	if url == "" {
		return OpenSQLite(ctx, dataDir, opts)
	}
	if !strings.HasPrefix(url, "postgres://") && !strings.HasPrefix(url, "postgresql://") {
		return nil, fmt.Errorf("database URL must start with postgres://")
	}
	return OpenPostgres(ctx, url, opts)
}

// wrapConnector, when a test sets it, wraps the connections of the pools opened afterwards: the
// query-plan test records every statement the store sends.
var wrapConnector func(driver.Connector) driver.Connector

// openPool opens a pool of the named driver, through wrapConnector when it is set. SQLite's
// connections keep their compiled statements (stmtcache.go).
func openPool(driverName, dsn string) (*sql.DB, error) {
	pool, err := sql.Open(driverName, dsn)
	if err != nil || (wrapConnector == nil && driverName != "sqlite") {
		return pool, err
	}
	drv := pool.Driver()
	if err := pool.Close(); err != nil {
		return nil, err
	}
	var c driver.Connector = dsnConnector{drv, dsn}
	if driverName == "sqlite" {
		c = stmtCachingConnector{c}
	}
	if wrapConnector != nil {
		c = wrapConnector(c)
	}
	return sql.OpenDB(c), nil
}

type dsnConnector struct {
	drv driver.Driver
	dsn string
}

func (c dsnConnector) Connect(context.Context) (driver.Conn, error) { return c.drv.Open(c.dsn) }
func (c dsnConnector) Driver() driver.Driver                        { return c.drv }

// Dialect is "sqlite" or "postgres".
func (db *DB) Dialect() string { return db.dialect }

func (db *DB) init(ctx context.Context) error {
	dialect := db.dialect
	clock := db.Now
	if clock == nil {
		clock = time.Now
	}
	// The database keeps microseconds; so does everything handed out, so that an answer and a
	// later read of the same row agree.
	db.Now = func() time.Time { return clock().UTC().Truncate(time.Microsecond) }
	if db.Rand == nil {
		db.Rand = cryptoRand
	}
	if err := db.migrate(ctx, dialect); err != nil {
		return err
	}
	db.optimize(ctx)
	if db.sealer != nil {
		if err := db.checkSealer(ctx); err != nil {
			return err
		}
		// A master key file re-read while the server runs must open this database's check
		// value: a key file of another installation copied over this one's is refused.
		db.sealer.SetReloadCheck(db.openCheck)
	}
	return nil
}

// openCheck answers whether candidate opens the database's check value.
func (db *DB) openCheck(candidate *seal.Sealer) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var c seal.Sealed
	if err := db.ro.QueryRowContext(ctx, `SELECT ciphertext, wrapped_key FROM seal_check WHERE id = 1`).Scan(&c.Ciphertext, &c.WrappedKey); err != nil {
		return fmt.Errorf("reading the check value: %w", err)
	}
	return candidate.VerifyCheck(c)
}

// Close closes the database.
func (db *DB) Close() error {
	if db.ro == db.rw {
		return db.rw.Close()
	}
	return errors.Join(db.rw.Close(), db.ro.Close())
}

// Ping reports whether the database answers, for readiness checks.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.rw.PingContext(ctx); err != nil {
		return unavailable(err)
	}
	return nil
}

func (db *DB) migrate(ctx context.Context, dialect string) error {
	dir := "migrations/" + dialect
	list, err := migrationList(dialect)
	if err != nil {
		return err
	}
	// Not db.write: on PostgreSQL that locks the audit-chain head, which the first migration creates.
	return runTx(ctx, db.rw, nil, func(tx *sql.Tx) error {
		if dialect == "postgres" {
			// Servers starting together must not both migrate; SQLite's IMMEDIATE does this there.
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(7213190851)`); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)`); err != nil {
			return err
		}
		// Every migration not yet recorded is applied, in order, not only those above the
		// highest recorded: work merged in another order than its numbers leaves gaps (a
		// database at 12 without 10), which the next start fills.
		versions, err := queryAll(ctx, tx, func(s scanner) (int64, error) {
			var v int64
			return v, s.Scan(&v)
		}, `SELECT version FROM schema_migrations`)
		if err != nil {
			return err
		}
		derive := false
		for _, m := range list {
			version, name := m.version, m.name
			if slices.Contains(versions, version) {
				continue
			}
			derive = derive || version == statusMigration
			body, err := migrations.ReadFile(dir + "/" + name)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, string(body)); err != nil {
				return fmt.Errorf("migration %s: %w", name, err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)`, version, micros(db.Now())); err != nil {
				return err
			}
		}
		if derive {
			// The stored status is derived state: rows from before it get theirs in the same
			// transaction as the schema, after every migration, so the Go that derives it
			// reads the schema it was written for.
			return deriveAll(ctx, tx, db.Now())
		}
		return nil
	})
}

// statusMigration is the migration that introduced the stored escrow status.
const statusMigration = 10

// largeChange is how many rows a change touches before the query planner's statistics are
// refreshed after it.
const largeChange = 1000

// optimize refreshes SQLite's query-planner statistics where they are missing or stale
// (PRAGMA optimize, bounded by analysis_limit so it stays quick on a large database). Without
// statistics SQLite plans "device_id IN (...) AND status = ..." on the index of the second
// column and walks every key of the fleet. PostgreSQL's autovacuum keeps its own statistics.
// Best effort: a failure costs speed, never correctness.
func (db *DB) optimize(ctx context.Context) {
	if db.dialect != "sqlite" {
		return
	}
	db.optimizedAt.Store(micros(db.Now()))
	_, _ = db.rw.ExecContext(ctx, `PRAGMA analysis_limit = 1000`)
	// 0x10002: look at every table, not only those this connection used, and analyze those
	// whose statistics are missing or off by a factor of 25 or more.
	_, _ = db.rw.ExecContext(ctx, `PRAGMA optimize = 0x10002`)
	// ANALYZE also samples values into sqlite_stat4. With samples for a column, a kept
	// statement (stmtcache.go) is compiled again whenever a value bound against that column
	// changes, which is every request; the samples only refine estimates for skewed values,
	// which none of the store's plans rely on (TestQueryPlans holds every plan on
	// sqlite_stat1 alone). "ANALYZE sqlite_schema" reloads the statistics.
	_, _ = db.rw.ExecContext(ctx, `DELETE FROM sqlite_stat4`)
	_, _ = db.rw.ExecContext(ctx, `ANALYZE sqlite_schema`)
	// The writer's kept statements are planned again with the new statistics; the readers'
	// connections are renewed every few minutes (openSQLiteFile).
	_ = forgetStatements(ctx, db.rw)
}

type migration struct {
	version int64
	name    string
}

// migrationList returns the dialect's migrations in the order they apply.
func migrationList(dialect string) ([]migration, error) {
	entries, err := fs.ReadDir(migrations, "migrations/"+dialect)
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var list []migration
	for _, e := range entries {
		version, err := strconv.ParseInt(strings.SplitN(e.Name(), "_", 2)[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("migration %s: name must start with its number", e.Name())
		}
		list = append(list, migration{version, e.Name()})
	}
	slices.SortFunc(list, func(a, b migration) int { return cmp.Compare(a.version, b.version) })
	return list, nil
}

// checkSealer stores a sealed check value on first start and opens it on every later start,
// so that a wrong master key stops the server at once, not at the first disclosure. The check
// value carries the audit chain's key; the first start with the master key keys the chain.
func (db *DB) checkSealer(ctx context.Context) error {
	return db.write(ctx, func(tx *sql.Tx) error {
		k, err := ensureAuditKey(ctx, tx, db.sealer, db.Rand)
		if err != nil {
			return err
		}
		db.auditKey.Store(k)
		return nil
	})
}

// read runs fn in a read-only transaction: one consistent snapshot.
func (db *DB) read(ctx context.Context, fn func(tx *sql.Tx) error) error {
	var opts *sql.TxOptions
	if db.dialect == "postgres" {
		opts = &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead}
	}
	return runTx(ctx, db.ro, opts, fn)
}

func runTx(ctx context.Context, pool *sql.DB, opts *sql.TxOptions, fn func(tx *sql.Tx) error) error {
	tx, err := pool.BeginTx(ctx, opts)
	if err != nil {
		return unavailable(err)
	}
	if err := fn(tx); err != nil {
		rbErr := tx.Rollback()
		if rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) {
			err = errors.Join(err, rbErr)
		}
		if _, ok := errors.AsType[*escrow.Error](err); ok {
			return err
		}
		return unavailable(err)
	}
	if err := tx.Commit(); err != nil {
		return unavailable(err)
	}
	return nil
}

func unavailable(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return escrow.Wrap(escrow.CodeUnavailable, err, "the request was cancelled")
	}
	return escrow.Wrap(escrow.CodeUnavailable, err, "storage is unavailable; nothing was changed")
}

// micros converts a time to what the database stores.
func micros(t time.Time) int64 { return t.UnixMicro() }

// nullMicros is micros for optional times: the zero time is NULL.
func nullMicros(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMicro(), Valid: true}
}

// fromMicros converts back; NULL is the zero time.
func fromMicros(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.UnixMicro(v.Int64).UTC()
}

// placeholders returns "$from, $from+1, ..." for n values.
func placeholders(from, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("$" + strconv.Itoa(from+i))
	}
	return b.String()
}

// dbtx is what both *sql.Tx and *sql.DB offer; helpers take it so they run inside whatever
// transaction their caller holds.
type dbtx interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func itoa(n int) string { return strconv.Itoa(n) }
