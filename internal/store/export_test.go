package store

import (
	"context"
	"database/sql"

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
