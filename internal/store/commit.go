package store

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/escrow"
)

// Group commit. A commit costs one fsync, and a disk does only so many of those a second one
// after the other; a transaction and an fsync per request would make that rate the ceiling of
// the whole server. So concurrent writes share them: the requests that are waiting when a
// transaction starts run in it one after the other, each in its own savepoint, and are
// answered only after its one commit.
//
// There is no writer goroutine: the first request to arrive while no batch is being written
// leads, running the batch with whatever queued behind it, and on the way out hands the lead to
// the first request that queued meanwhile. While a batch commits the next one fills, so under
// load batches grow by themselves and when idle a lone request is written at once.
//
// What each request may rely on is what it had with a transaction of its own:
//   - It sees the changes of the requests before it in the batch (they run in order, in one
//     transaction), and the chain head that its predecessor left, so audit events keep their
//     order and each is appended in the request's savepoint.
//   - Its failure, error or panic, rolls back to its savepoint: its changes and its audit
//     events are gone, the others' are kept.
//   - It is answered only after the commit. A failed commit fails every request that ran in the
//     batch (503); nothing is acknowledged that is not durable, so a crash loses only requests
//     that were never answered.
//   - Its context still cancels it: one cancelled before its turn is skipped and did nothing.
//     One cancelled while it runs can take the transaction down with it (SQLite rolls the
//     whole transaction back on an interrupt; pgx closes the connection): the requests that
//     ran before it are then answered 503 and those not yet run go on in the next batch.
//
// A closure passed to write must do its work through the tx it is given: another connection
// would not see the batch's uncommitted changes, and on PostgreSQL it could wait forever for a
// lock the batch holds. It must not call write itself (that waits for its own batch).

// maxBatch bounds the requests in one transaction, so that a long queue still gets answers at
// a steady pace. On PostgreSQL each request's savepoint that writes is a subtransaction, and a
// transaction with more than 64 of them overflows the per-backend cache of subtransaction
// IDs, after which every other session's snapshot has to look them up in pg_subtrans.
func (db *DB) maxBatch() int {
	if db.dialect == "postgres" {
		return 64
	}
	return 256
}

// writeRequest is one call of write waiting for its turn.
type writeRequest struct {
	ctx context.Context
	fn  func(tx *sql.Tx) error
	// done gets exactly one answer per turn: the lead (the request then writes a batch and
	// gets its own result next) or the request's result.
	done chan writeAnswer
}

type writeAnswer struct {
	lead  bool
	err   error
	panic any // what fn panicked with, re-raised in the caller's goroutine
}

// committer is the queue of write requests and the counts behind WriteCounts.
type committer struct {
	mu      sync.Mutex
	queue   []*writeRequest
	leading bool // a request is writing a batch or has been handed the lead

	commits atomic.Int64
	writes  atomic.Int64

	// head is the audit-chain head of the batch being written (nil between batches): read
	// once when the batch begins, moved in memory by each append and written once before the
	// commit (audit.go).
	head atomic.Pointer[batchHead]

	// beforeCommit, when set (tests), runs just before each batch's commit.
	beforeCommit func(tx *sql.Tx)
}

// WriteCounts returns how many write transactions have committed and how many write requests
// they acknowledged (their work committed and their caller was told so) since the store was
// opened. commits/writes is the share of a commit, and of its fsync, that each write cost.
func (db *DB) WriteCounts() (commits, writes int64) {
	return db.commit.commits.Load(), db.commit.writes.Load()
}

// write runs fn in a read-write transaction, shared with the write requests queued beside it,
// and returns once that transaction has committed. Errors from the database become
// CodeUnavailable: the caller answers 503 and acknowledges nothing.
//
// On PostgreSQL every write transaction first locks the audit-chain head. Nearly every write
// appends to the chain, which has to be serial anyway; taking the lock first makes all writes
// serial, as on SQLite, so a read-then-write service needs no retry logic and two servers
// never interleave their changes. With group commit the lock is taken once per batch.
func (db *DB) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return unavailable(err)
	}
	c := &db.commit
	req := &writeRequest{ctx: ctx, fn: fn, done: make(chan writeAnswer, 1)}
	c.mu.Lock()
	c.queue = append(c.queue, req)
	lead := !c.leading
	c.leading = true
	c.mu.Unlock()
	// The wait ignores ctx: once queued, fn may be running in the leader's goroutine, writing
	// to variables the caller reads when write returns.
	var a writeAnswer
	if !lead {
		a = <-req.done
		lead = a.lead
	}
	if lead {
		db.lead()
		a = <-req.done
	}
	if a.panic != nil {
		panic(a.panic)
	}
	return a.err
}

// lead writes one batch from the head of the queue (the leader is the first in it), answers
// its requests, and hands the lead to the next request waiting, if any.
func (db *DB) lead() {
	c := &db.commit
	c.mu.Lock()
	n := min(len(c.queue), db.maxBatch())
	batch := c.queue[:n:n]
	c.queue = c.queue[n:]
	c.mu.Unlock()

	answers := db.writeBatch(batch)
	// Requests the batch never ran (its transaction broke first) go first in the next one.
	unrun := batch[len(answers):]
	for i, a := range answers {
		batch[i].done <- a
	}

	c.mu.Lock()
	c.queue = append(unrun, c.queue...)
	if len(c.queue) == 0 {
		c.leading = false
		c.mu.Unlock()
		return
	}
	next := c.queue[0]
	c.mu.Unlock()
	next.done <- writeAnswer{lead: true}
}

// writeBatch runs the batch's requests in one transaction and returns the answers of the first
// ones, in order: all of them, or those that ran before the transaction broke (at least the
// first: it breaks only at a request's end).
func (db *DB) writeBatch(batch []*writeRequest) []writeAnswer {
	c := &db.commit
	answers := make([]writeAnswer, 0, len(batch))
	failAll := func(err error) []writeAnswer {
		for range batch {
			answers = append(answers, writeAnswer{err: unavailable(err)})
		}
		return answers
	}
	// The transaction belongs to no one request: a request's cancelled context must not roll
	// back the others' work.
	ctx := context.Background()
	tx, err := db.rw.BeginTx(ctx, nil)
	if err != nil {
		return failAll(err)
	}
	// Each request runs in a savepoint of its own. The statements that end one and begin the
	// next go in one round trip (PostgreSQL's simple protocol and SQLite both take several
	// statements in one Exec without arguments), and so does the first with the lock.
	head, err := beginBatch(ctx, tx, db.dialect)
	if err != nil {
		_ = tx.Rollback()
		return failAll(err)
	}
	c.head.Store(head)
	defer c.head.Store(nil)
	var broken error // why the transaction cannot be committed
	for i, r := range batch {
		if i > 0 {
			if err := nextSavepoint(ctx, tx, db.dialect); err != nil {
				broken = err
				break
			}
		}
		if err := r.ctx.Err(); err != nil {
			// Cancelled while it waited: it did nothing, and says so.
			answers = append(answers, writeAnswer{err: unavailable(err)})
			continue
		}
		before := head.at
		a := runGuarded(r.fn, tx)
		answers = append(answers, a)
		if a.err != nil || a.panic != nil {
			head.at = before // its events are rolled back with it
			if _, err := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT request`); err != nil {
				// The transaction is gone (SQLite rolls all of it back on some errors, an
				// interrupt among them) or the connection is: none of the batch can commit.
				answers[i].err, broken = errors.Join(a.err, err), err
				break
			}
		}
	}

	succeeded := 0
	for _, a := range answers {
		if a.err == nil && a.panic == nil {
			succeeded++
		}
	}
	commitErr := broken
	switch {
	case broken != nil:
		_ = tx.Rollback()
	case succeeded == 0:
		// Every request failed and was rolled back to its savepoint: there is nothing to make
		// durable, so no commit (and no fsync) is spent on the batch.
		_ = tx.Rollback()
	default:
		if commitErr = head.write(ctx, tx); commitErr != nil {
			_ = tx.Rollback()
			break
		}
		if c.beforeCommit != nil {
			c.beforeCommit(tx)
		}
		// A failed COMMIT leaves no transaction open on the connection: the SQLite driver
		// rolls back what SQLite keeps open, PostgreSQL ends it.
		if commitErr = tx.Commit(); commitErr == nil {
			c.commits.Add(1)
		}
	}
	for i, a := range answers {
		switch {
		case a.panic != nil:
		case a.err != nil:
			answers[i].err = classify(a.err)
		case commitErr != nil:
			answers[i].err = unavailable(commitErr)
		default:
			c.writes.Add(1)
		}
	}
	return answers
}

// batchHead is the audit-chain head while a batch is written. The batch holds the chain: on
// SQLite its transaction is the only writer, on PostgreSQL it locks the head row first. So the
// head is read and authenticated once, each append takes it from here and moves it, and it is
// written back once, before the commit, instead of read and written by every append.
type batchHead struct {
	tx      *sql.Tx
	read    audit.Head // as the batch found it
	at      audit.Head // after the appends so far
	checked bool       // read has been authenticated (at the first append)
}

// beginBatch locks and reads the chain head and opens the first request's savepoint.
func beginBatch(ctx context.Context, tx *sql.Tx, dialect string) (*batchHead, error) {
	q := `SELECT seq, hash, mac FROM audit_head WHERE id = 1`
	if dialect == "postgres" {
		q += ` FOR UPDATE`
	}
	b := &batchHead{tx: tx}
	if err := tx.QueryRowContext(ctx, q).Scan(&b.read.Seq, &b.read.Hash, &b.read.MAC); err != nil {
		return nil, err
	}
	b.at = b.read
	if _, err := tx.ExecContext(ctx, `SAVEPOINT request`); err != nil {
		return nil, err
	}
	return b, nil
}

// write stores the head the batch's appends left, if they moved it.
func (b *batchHead) write(ctx context.Context, tx *sql.Tx) error {
	if b.at.Seq == b.read.Seq {
		return nil
	}
	_, err := tx.ExecContext(ctx, `UPDATE audit_head SET seq = $1, hash = $2, mac = $3 WHERE id = 1`, b.at.Seq, b.at.Hash, b.at.MAC)
	return err
}

// batchHeadOf returns the head of the batch tx belongs to, or nil for a transaction of its own.
func (db *DB) batchHeadOf(tx dbtx) *batchHead {
	if b := db.commit.head.Load(); b != nil && dbtx(b.tx) == tx {
		return b
	}
	return nil
}

// nextSavepoint ends the savepoint of one request and begins the next one's: in one round trip
// on PostgreSQL, and on SQLite as two statements, each compiled once and kept (stmtcache.go
// keeps no script of several statements).
func nextSavepoint(ctx context.Context, tx *sql.Tx, dialect string) error {
	if dialect == "postgres" {
		_, err := tx.ExecContext(ctx, `RELEASE SAVEPOINT request; SAVEPOINT request`)
		return err
	}
	if _, err := tx.ExecContext(ctx, `RELEASE SAVEPOINT request`); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `SAVEPOINT request`)
	return err
}

// runGuarded runs fn, turning a panic into an answer so that the batch can go on without the
// panicking request and the panic is raised again in the request's own goroutine.
func runGuarded(fn func(tx *sql.Tx) error, tx *sql.Tx) (a writeAnswer) {
	defer func() {
		if p := recover(); p != nil {
			a = writeAnswer{panic: p}
		}
	}()
	return writeAnswer{err: fn(tx)}
}

// classify keeps a service's own errors and makes any other error (the database's) unavailable.
func classify(err error) error {
	if _, ok := errors.AsType[*escrow.Error](err); ok {
		return err
	}
	return unavailable(err)
}
