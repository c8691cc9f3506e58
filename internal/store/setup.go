package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// First start. A new installation has nobody who can sign in; rather than leave the way in to
// the README, the server prints a one-time setup link whose page creates the first admin. The
// threat is a link that outlives its purpose: only the SHA-256 of its 256-bit token is stored,
// it works for one hour and once, and only while no enabled admin exists, so a link found later
// in a log or a terminal's scroll-back opens nothing.

var errSetupLink = escrow.Errorf(escrow.CodeNotFound, "This setup link does not work: it was used, it is more than an hour old, or Keyward already has an admin. Run \"keyward setup-link\" on the server for a new one.")

// hasAdmin reports whether an enabled admin exists.
func hasAdmin(ctx context.Context, q dbtx) (bool, error) {
	var one int
	err := q.QueryRowContext(ctx, `SELECT 1 FROM users WHERE role = 'admin' AND disabled_at IS NULL LIMIT 1`).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// NeedsSetup reports whether the installation has no enabled admin yet.
func (db *DB) NeedsSetup(ctx context.Context) (bool, error) {
	var admin bool
	err := db.read(ctx, func(tx *sql.Tx) error {
		var err error
		admin, err = hasAdmin(ctx, tx)
		return err
	})
	return !admin, err
}

// SetupTokenHash is what a setup token is stored and looked up by.
func SetupTokenHash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// CreateSetupLink makes a setup token (256 random bits, base64url), stores its hash valid for
// ttl with a setup.link audit event, and returns the token: the caller prints it once, in the
// link. Links made before stay valid until they expire: with several servers starting at once,
// each one's printed link works. Errors: CodeConflict when an admin exists.
func (db *DB) CreateSetupLink(ctx context.Context, o escrow.Origin, ttl time.Duration) (string, error) {
	b := make([]byte, 32)
	if _, err := io.ReadFull(db.Rand, b); err != nil {
		return "", fmt.Errorf("generate setup token: %w", err)
	}
	token := base64.RawURLEncoding.EncodeToString(b)
	tokenHash := SetupTokenHash(token)
	err := db.write(ctx, func(tx *sql.Tx) error {
		admin, err := hasAdmin(ctx, tx)
		if err != nil {
			return err
		}
		if admin {
			return escrow.Errorf(escrow.CodeConflict, "Keyward already has an admin: sign in, or ask an admin to add you")
		}
		now := db.Now()
		if _, err := tx.ExecContext(ctx, `DELETE FROM setup_tokens WHERE expires_at <= $1`, micros(now)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO setup_tokens (token_hash, created_at, expires_at) VALUES ($1, $2, $3)`,
			tokenHash, micros(now), micros(now.Add(ttl))); err != nil {
			return err
		}
		e := o.Event(escrow.ActionSetupLink, escrow.OutcomeSuccess)
		e.Detail = "one-time setup link for the first admin, valid until " + now.Add(ttl).UTC().Format(time.RFC3339)
		return db.appendEvent(ctx, tx, e)
	})
	if err != nil {
		return "", err
	}
	return token, nil
}

// checkSetupLink returns errSetupLink unless tokenHash names a link that has not expired and
// no enabled admin exists.
func (db *DB) checkSetupLink(ctx context.Context, q dbtx, tokenHash []byte) error {
	var expires int64
	err := q.QueryRowContext(ctx, `SELECT expires_at FROM setup_tokens WHERE token_hash = $1`, tokenHash).Scan(&expires)
	if errors.Is(err, sql.ErrNoRows) {
		return errSetupLink
	}
	if err != nil {
		return err
	}
	if micros(db.Now()) >= expires {
		return errSetupLink
	}
	admin, err := hasAdmin(ctx, q)
	if err != nil {
		return err
	}
	if admin {
		return errSetupLink
	}
	return nil
}

// CheckSetupLink reports whether a setup link still works. Errors: CodeNotFound (with a message
// saying what to do) when it does not.
func (db *DB) CheckSetupLink(ctx context.Context, tokenHash []byte) error {
	return db.read(ctx, func(tx *sql.Tx) error { return db.checkSetupLink(ctx, tx, tokenHash) })
}

// CompleteSetup creates the first admin from a setup link, in one transaction with the
// setup.admin audit event, and deletes every setup link: the link is single use, and no other
// works once an admin exists. Errors: CodeNotFound when the link does not work (nothing is
// created); CodeInvalid for a bad email; those of CreateUser.
func (db *DB) CompleteSetup(ctx context.Context, o escrow.Origin, tokenHash []byte, nu escrow.NewUser) (escrow.User, error) {
	nu.Role = escrow.RoleAdmin
	nu.ScopeTags = nil
	row, err := db.newUserRow(nu)
	if err != nil {
		return escrow.User{}, err
	}
	err = db.write(ctx, func(tx *sql.Tx) error {
		if err := db.checkSetupLink(ctx, tx, tokenHash); err != nil {
			return err
		}
		if err := db.insertUser(ctx, tx, o, row); err != nil {
			return err
		}
		return db.endSetup(ctx, tx, o, row.user)
	})
	if err != nil {
		return escrow.User{}, err
	}
	return row.user, nil
}

// PromoteFirstAdmin makes an existing person (one who has just signed on through the identity
// provider from a setup link) the first admin, in one transaction with the setup.admin event.
// Errors: CodeNotFound when the link does not work.
func (db *DB) PromoteFirstAdmin(ctx context.Context, o escrow.Origin, tokenHash []byte, userID string) (escrow.User, error) {
	var u escrow.User
	err := db.write(ctx, func(tx *sql.Tx) error {
		if err := db.checkSetupLink(ctx, tx, tokenHash); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET role = 'admin', scope_tags = '[]' WHERE id = $1 AND disabled_at IS NULL`, userID); err != nil {
			return err
		}
		var err error
		if u, err = scanUser(tx.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1`, userID)); err != nil {
			return err
		}
		if u.Role != escrow.RoleAdmin {
			return errSetupLink
		}
		return db.endSetup(ctx, tx, o, u)
	})
	return u, err
}

// endSetup deletes every setup link and records who became the first admin.
func (db *DB) endSetup(ctx context.Context, tx *sql.Tx, o escrow.Origin, u escrow.User) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM setup_tokens`); err != nil {
		return err
	}
	e := o.Event(escrow.ActionSetupAdmin, escrow.OutcomeSuccess)
	e.Detail = "first admin " + u.Email + " created from the setup link"
	return db.appendEvent(ctx, tx, e)
}
