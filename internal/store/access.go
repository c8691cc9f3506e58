package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// This file holds taking access away: disabling people, revoking API and enrollment tokens,
// and the listings an admin decides from. Each change and its audit event are one transaction.

var (
	errNoToken       = escrow.Errorf(escrow.CodeNotFound, "token: no such token")
	errNoEnrollToken = escrow.Errorf(escrow.CodeNotFound, "enrollment token: no such token")
)

const (
	errLastAdmin       = "%s: %s is the last admin; make someone else admin first"
	errSelfAdminChange = "%s: you cannot take the admin role or access away from yourself; ask another admin"
)

// UpdateUser changes a user's role, scope tags and whether they are disabled; nil fields of ch
// stay as they are. A role or tag change is one user.role event, disabling and enabling one
// user.disable or user.enable event, all in the change's transaction. Disabling ends the
// person's portal sessions at once; their API tokens and sign-ins are refused while disabled
// (AuthenticateAPIToken, SessionPrincipal, UserCredentials, SSOUser) and work again when they
// are enabled. Nobody may take the admin role or access away from the last enabled admin, which
// would leave nobody able to manage the installation, nor from themself, so that an admin cannot
// lock themself out by a slip. Errors: CodeInvalid, CodeNotFound, CodeConflict.
func (db *DB) UpdateUser(ctx context.Context, o escrow.Origin, userID string, ch escrow.UserChange) (escrow.User, error) {
	if ch.Role != nil && !ch.Role.Valid() {
		return escrow.User{}, escrow.Errorf(escrow.CodeInvalid, "role: must be one of admin, helpdesk, auditor, user")
	}
	var tags []byte
	if ch.ScopeTags != nil {
		for _, t := range *ch.ScopeTags {
			if err := escrow.CheckText("scopeTags", t, true, 64); err != nil {
				return escrow.User{}, err
			}
		}
		var err error
		if tags, err = json.Marshal(nonNil(*ch.ScopeTags)); err != nil {
			return escrow.User{}, err
		}
	}
	var u escrow.User
	err := db.write(ctx, func(tx *sql.Tx) error {
		var err error
		u, err = scanUser(tx.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1`, userID))
		if err != nil {
			return err
		}
		role, disable := u.Role, u.Disabled()
		if ch.Role != nil {
			role = *ch.Role
		}
		if ch.Disabled != nil {
			disable = *ch.Disabled
		}
		if u.Role == escrow.RoleAdmin && !u.Disabled() && (role != escrow.RoleAdmin || disable) {
			field := "role"
			if disable {
				field = "disabled"
			}
			var admins int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled_at IS NULL`).Scan(&admins); err != nil {
				return err
			}
			if admins <= 1 {
				return escrow.Errorf(escrow.CodeConflict, errLastAdmin, field, u.Email)
			}
			if actsAs(o, u) {
				return escrow.Errorf(escrow.CodeConflict, errSelfAdminChange, field)
			}
		}
		if ch.Role != nil || ch.ScopeTags != nil {
			if err := db.changeRole(ctx, tx, o, &u, role, ch.ScopeTags, tags); err != nil {
				return err
			}
		}
		if disable == u.Disabled() {
			return nil
		}
		return db.changeDisabled(ctx, tx, o, &u, disable)
	})
	return u, err
}

// changeRole sets the user's role and, when scopeTags is not nil, their tags (tags is its JSON).
func (db *DB) changeRole(ctx context.Context, tx *sql.Tx, o escrow.Origin, u *escrow.User, role escrow.Role, scopeTags *[]string, tags []byte) error {
	if scopeTags != nil {
		if _, err := tx.ExecContext(ctx, `UPDATE users SET role = $2, scope_tags = $3 WHERE id = $1`, u.ID, string(role), string(tags)); err != nil {
			return err
		}
	} else if _, err := tx.ExecContext(ctx, `UPDATE users SET role = $2 WHERE id = $1`, u.ID, string(role)); err != nil {
		return err
	}
	e := o.Event(escrow.ActionUserRole, escrow.OutcomeSuccess)
	e.Detail = "user " + u.Email + " role " + string(u.Role) + " -> " + string(role)
	u.Role = role
	if scopeTags != nil {
		u.ScopeTags = nonNil(*scopeTags)
	}
	if len(u.ScopeTags) > 0 {
		e.Detail += " limited to tags " + strings.Join(u.ScopeTags, ", ")
	}
	return db.appendEvent(ctx, tx, e)
}

// changeDisabled disables or enables the user. Disabling deletes their sessions, so a browser
// signed in as them is signed out at its next request on every server.
func (db *DB) changeDisabled(ctx context.Context, tx *sql.Tx, o escrow.Origin, u *escrow.User, disable bool) error {
	action, detail := escrow.ActionUserEnable, "user "+u.Email+" enabled"
	disabledAt := sql.NullInt64{}
	if disable {
		now := db.Now().UTC()
		action, detail, disabledAt, u.DisabledAt = escrow.ActionUserDisable, "user "+u.Email+" disabled", nullMicros(now), now
		res, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE user_id = $1`, u.ID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err == nil && n > 0 {
			detail += "; " + itoa(int(n)) + " portal sessions ended"
		}
	} else {
		u.DisabledAt = time.Time{}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE users SET disabled_at = $2 WHERE id = $1`, u.ID, disabledAt); err != nil {
		return err
	}
	e := o.Event(action, escrow.OutcomeSuccess)
	e.Detail = detail
	return db.appendEvent(ctx, tx, e)
}

// actsAs reports whether the origin is the user themself: signed in to the portal as them, or
// holding one of their API tokens.
func actsAs(o escrow.Origin, u escrow.User) bool {
	switch o.Actor.Type {
	case escrow.ActorUser:
		return o.Actor.ID == u.ID
	case escrow.ActorToken:
		return escrow.SameName(o.Actor.Name, u.Email)
	}
	return false
}

// ListAPITokens returns the API tokens of the user with this email, or everyone's when email is
// empty, oldest first: what they are, never their secrets. An installation has tokens in the
// hundreds, so there is no paging.
func (db *DB) ListAPITokens(ctx context.Context, email string) ([]escrow.APIToken, error) {
	query := `SELECT t.id, u.email, t.name, t.created_at, t.last_used_at, t.revoked_at
		FROM api_tokens t JOIN users u ON u.id = t.user_id`
	var args []any
	if email != "" {
		query += ` WHERE u.email_key = $1`
		args = append(args, nameKey(email))
	}
	var out []escrow.APIToken
	err := db.read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, query+` ORDER BY t.created_at, t.id`, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var t escrow.APIToken
			var created int64
			var used, revoked sql.NullInt64
			if err := rows.Scan(&t.ID, &t.UserEmail, &t.Name, &created, &used, &revoked); err != nil {
				return err
			}
			t.CreatedAt, t.LastUsedAt, t.RevokedAt = fromMicros(sql.NullInt64{Int64: created, Valid: true}), fromMicros(used), fromMicros(revoked)
			out = append(out, t)
		}
		return rows.Err()
	})
	return out, err
}

// RevokeAPIToken revokes the API token with this ID: from the next request on, on every server,
// it answers 401 (AuthenticateAPIToken reads the token's row each time). With owner set, only a
// token of the user with that email is revoked: another person's token answers exactly like an
// unknown one, so a person cannot learn which token IDs exist, and the attempt is audited as
// denied. Errors: CodeNotFound, CodeConflict for a token already revoked.
func (db *DB) RevokeAPIToken(ctx context.Context, o escrow.Origin, id, owner string) error {
	var denied bool
	err := db.write(ctx, func(tx *sql.Tx) error {
		var email string
		var revoked sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT u.email, t.revoked_at FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.id = $1`, id).
			Scan(&email, &revoked)
		if errors.Is(err, sql.ErrNoRows) {
			return errNoToken
		}
		if err != nil {
			return err
		}
		if owner != "" && !escrow.SameName(owner, email) {
			denied = true
			e := o.Event(escrow.ActionTokenRevoke, escrow.OutcomeDenied)
			e.Detail = "API token " + id + " belongs to someone else"
			return db.appendEvent(ctx, tx, e)
		}
		if revoked.Valid {
			return escrow.Errorf(escrow.CodeConflict, "token: already revoked")
		}
		if _, err := tx.ExecContext(ctx, `UPDATE api_tokens SET revoked_at = $2 WHERE id = $1`, id, micros(db.Now())); err != nil {
			return err
		}
		e := o.Event(escrow.ActionTokenRevoke, escrow.OutcomeSuccess)
		e.Detail = "API token " + id + " of " + email
		return db.appendEvent(ctx, tx, e)
	})
	if err == nil && denied {
		err = errNoToken
	}
	return err
}

// ListEnrollmentTokens returns every enrollment token, oldest first, without secrets.
func (db *DB) ListEnrollmentTokens(ctx context.Context) ([]escrow.EnrollmentTokenInfo, error) {
	var out []escrow.EnrollmentTokenInfo
	err := db.read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT id, uses_left, expires_at, created_by, created_at, revoked_at
			FROM enrollment_tokens ORDER BY created_at, id`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var t escrow.EnrollmentTokenInfo
			var created int64
			var uses, expires, revoked sql.NullInt64
			if err := rows.Scan(&t.ID, &uses, &expires, &t.CreatedBy, &created, &revoked); err != nil {
				return err
			}
			if uses.Valid {
				t.UsesLeft = &uses.Int64
			}
			t.CreatedAt, t.ExpiresAt, t.RevokedAt = fromMicros(sql.NullInt64{Int64: created, Valid: true}), fromMicros(expires), fromMicros(revoked)
			out = append(out, t)
		}
		return rows.Err()
	})
	return out, err
}

// RevokeEnrollmentToken revokes the enrollment token with this ID: no device enrolls with it
// any more, and an attempt answers like an unknown token. Devices already enrolled keep their
// own tokens. Errors: CodeNotFound, CodeConflict for a token already revoked.
func (db *DB) RevokeEnrollmentToken(ctx context.Context, o escrow.Origin, id string) error {
	return db.write(ctx, func(tx *sql.Tx) error {
		var revoked sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT revoked_at FROM enrollment_tokens WHERE id = $1`, id).Scan(&revoked)
		if errors.Is(err, sql.ErrNoRows) {
			return errNoEnrollToken
		}
		if err != nil {
			return err
		}
		if revoked.Valid {
			return escrow.Errorf(escrow.CodeConflict, "enrollment token: already revoked")
		}
		if _, err := tx.ExecContext(ctx, `UPDATE enrollment_tokens SET revoked_at = $2 WHERE id = $1`, id, micros(db.Now())); err != nil {
			return err
		}
		e := o.Event(escrow.ActionEnrollTokenRevoke, escrow.OutcomeSuccess)
		e.Detail = "enrollment token " + id
		return db.appendEvent(ctx, tx, e)
	})
}
