package store

import (
	"context"
	"database/sql"
	"slices"
	"strings"

	"github.com/keyward/keyward/internal/escrow"
)

// The look-ups of the email notifications. They run behind the audit trail, never on a request
// path, and each is one index range: a device by its ID, a person by their sign-in name, the
// enabled admins and helpdesk people by role.

// DeviceRecord returns the device's stored record (name, owner, tags), retired or not, without
// its escrow status. Errors: CodeNotFound, CodeUnavailable.
func (db *DB) DeviceRecord(ctx context.Context, id string) (escrow.Device, error) {
	var d escrow.Device
	err := db.read(ctx, func(tx *sql.Tx) error {
		var err error
		d, err = findDevice(ctx, tx, id)
		return err
	})
	return d, err
}

// UserByName returns the person whose sign-in name is name (compared in canonical form),
// enabled or not. Errors: CodeNotFound, CodeUnavailable.
func (db *DB) UserByName(ctx context.Context, name string) (escrow.User, error) {
	var u escrow.User
	err := db.read(ctx, func(tx *sql.Tx) error {
		var err error
		u, err = findUserByEmail(ctx, tx, name)
		return err
	})
	return u, err
}

// Approvers returns the enabled admins and helpdesk people, in sign-in name order: those who
// may approve a request to view a device's keys (each within their scope). Errors:
// CodeUnavailable.
func (db *DB) Approvers(ctx context.Context) ([]escrow.User, error) {
	var out []escrow.User
	err := db.read(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = queryAll(ctx, tx, func(s scanner) (escrow.User, error) { return scanUser(s) },
			`SELECT `+userColumns+` FROM users WHERE role IN ($1, $2) AND disabled_at IS NULL`,
			string(escrow.RoleAdmin), string(escrow.RoleHelpdesk))
		return err
	})
	// Sorted here: an ORDER BY would let PostgreSQL walk the sign-in name index instead.
	slices.SortFunc(out, func(a, b escrow.User) int { return strings.Compare(a.Email, b.Email) })
	return out, err
}
