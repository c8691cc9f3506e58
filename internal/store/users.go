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

// nameKey is the key a sign-in name or owner UPN is looked up by: its canonical form. A name
// without one gives "", which no stored key equals, so it finds nobody.
func nameKey(name string) string {
	key, err := escrow.CanonicalName("name", name)
	if err != nil {
		return ""
	}
	return key
}

// signInName returns the canonical form of a new person's sign-in name, which must look like an
// email address. Errors: CodeInvalid naming field.
func signInName(field, email string) (string, error) {
	email, err := escrow.CanonicalName(field, email)
	if err != nil {
		return "", err
	}
	if !strings.Contains(email, "@") {
		return "", escrow.Errorf(escrow.CodeInvalid, "%s: must be a sign-in name like alice@example.com", field)
	}
	return email, nil
}

// CreateUser adds a user under the canonical form of their sign-in name (escrow.CanonicalName).
// Without a password hash the person is pre-provisioned for single sign-on: their first sign-on
// with a verified email links them. Errors: CodeInvalid for a bad email, role or scope tag,
// CodeConflict when the email is taken.
func (db *DB) CreateUser(ctx context.Context, o escrow.Origin, nu escrow.NewUser) (escrow.User, error) {
	row, err := db.newUserRow(nu)
	if err != nil {
		return escrow.User{}, err
	}
	err = db.write(ctx, func(tx *sql.Tx) error { return db.insertUser(ctx, tx, o, row) })
	if err != nil {
		return escrow.User{}, err
	}
	return row.user, nil
}

// userRow is a new person, checked and ready to insert.
type userRow struct {
	user         escrow.User
	tags         string // scope tags as JSON
	passwordHash string
}

// newUserRow checks a new person's fields. Errors: CodeInvalid naming the field.
func (db *DB) newUserRow(nu escrow.NewUser) (userRow, error) {
	email, err := signInName("email", nu.Email)
	if err != nil {
		return userRow{}, err
	}
	if !nu.Role.Valid() {
		return userRow{}, escrow.Errorf(escrow.CodeInvalid, "role: must be one of admin, helpdesk, auditor, user")
	}
	for _, t := range nu.ScopeTags {
		if err := escrow.CheckText("scopeTags", t, true, 64); err != nil {
			return userRow{}, err
		}
	}
	tags, err := json.Marshal(nonNil(nu.ScopeTags))
	if err != nil {
		return userRow{}, err
	}
	id, err := db.newID()
	if err != nil {
		return userRow{}, err
	}
	u := escrow.User{ID: id, Email: email, Role: nu.Role, ScopeTags: nu.ScopeTags, CreatedAt: db.Now().UTC()}
	return userRow{user: u, tags: string(tags), passwordHash: nu.PasswordHash}, nil
}

// insertUser adds the person inside tx with its user.create event. Errors: CodeConflict when
// the email is taken.
func (db *DB) insertUser(ctx context.Context, tx *sql.Tx, o escrow.Origin, row userRow) error {
	u := row.user
	var exists int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM users WHERE email_key = $1`, u.Email).Scan(&exists)
	if err == nil {
		return escrow.Errorf(escrow.CodeConflict, "email: a user with this email already exists")
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO users (id, email, email_key, role, scope_tags, password_hash, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		u.ID, u.Email, u.Email, string(u.Role), row.tags, row.passwordHash, micros(u.CreatedAt)); err != nil {
		return err
	}
	e := o.Event(escrow.ActionUserCreate, escrow.OutcomeSuccess)
	e.Detail = "user " + u.Email + " with role " + string(u.Role)
	return db.appendEvent(ctx, tx, e)
}

// CreateAPIToken issues an API token for the user with the given email. The token is returned
// once; only its hash is kept. Errors: CodeNotFound for an unknown user, CodeConflict for a
// disabled one.
func (db *DB) CreateAPIToken(ctx context.Context, o escrow.Origin, email, name string) (escrow.Token, error) {
	if err := escrow.CheckText("name", name, false, 200); err != nil {
		return escrow.Token{}, err
	}
	tok, err := escrow.NewToken(escrow.TokenAPI, db.Rand)
	if err != nil {
		return escrow.Token{}, err
	}
	err = db.write(ctx, func(tx *sql.Tx) error {
		var userID, userEmail string
		var disabled sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT id, email, disabled_at FROM users WHERE email_key = $1`, nameKey(email)).
			Scan(&userID, &userEmail, &disabled)
		if errors.Is(err, sql.ErrNoRows) {
			return escrow.Errorf(escrow.CodeNotFound, "user: no user with this email")
		}
		if err != nil {
			return err
		}
		if disabled.Valid {
			return escrow.Errorf(escrow.CodeConflict, "user: %s is disabled; enable them first", userEmail)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO api_tokens (id, user_id, name, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5)`,
			tok.ID, userID, name, tok.SecretHash(), micros(db.Now())); err != nil {
			return err
		}
		e := o.Event(escrow.ActionTokenCreate, escrow.OutcomeSuccess)
		e.Detail = "API token " + tok.ID + " for " + userEmail
		if name != "" {
			e.Detail += " named " + name
		}
		return db.appendEvent(ctx, tx, e)
	})
	return tok, err
}

// AuthenticateAPIToken returns the principal an API token stands for, reading the token's and
// its user's rows on every call, so a revocation or a disabled user takes effect at the next
// request on every server. Errors: CodeUnauthorized for a token that is unknown, revoked, wrong
// or of a disabled user, with one message for all, so a caller cannot tell which.
func (db *DB) AuthenticateAPIToken(ctx context.Context, tok escrow.Token) (escrow.Principal, error) {
	var hash []byte
	var revoked, disabled, used sql.NullInt64
	var p escrow.Principal
	var role, tags string
	err := db.ro.QueryRowContext(ctx, `SELECT t.secret_hash, t.revoked_at, t.last_used_at, u.email, u.role, u.scope_tags, u.disabled_at
		FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.id = $1`, tok.ID).Scan(&hash, &revoked, &used, &p.Email, &role, &tags, &disabled)
	if errors.Is(err, sql.ErrNoRows) {
		// Compare anyway, so an unknown ID takes as long as a wrong secret.
		tok.Matches(make([]byte, 32))
		return escrow.Principal{}, errBadToken
	}
	if err != nil {
		return escrow.Principal{}, unavailable(err)
	}
	if !tok.Matches(hash) || revoked.Valid || disabled.Valid {
		return escrow.Principal{}, errBadToken
	}
	if now := db.Now(); !used.Valid || now.Sub(fromMicros(used)) >= sessionTouchEvery {
		// Not db.write, as for sessions: bookkeeping, not an audited change. Kept to the minute
		// so that a busy automation account does not write on every request.
		if _, err := db.rw.ExecContext(ctx, `UPDATE api_tokens SET last_used_at = $2 WHERE id = $1`, tok.ID, micros(now)); err != nil {
			return escrow.Principal{}, unavailable(err)
		}
	}
	if err := json.Unmarshal([]byte(tags), &p.ScopeTags); err != nil {
		return escrow.Principal{}, escrow.Wrap(escrow.CodeInternal, err, "stored user is damaged")
	}
	p.Role = escrow.Role(role)
	p.Actor = escrow.Actor{Type: escrow.ActorToken, ID: tok.ID, Name: p.Email}
	return p, nil
}

var errBadToken = escrow.Errorf(escrow.CodeUnauthorized, "the token is not valid")

// CreateEnrollmentToken issues a token that lets devices enroll. uses 0 means unlimited;
// validFor 0 means no expiry.
func (db *DB) CreateEnrollmentToken(ctx context.Context, o escrow.Origin, uses int64, validFor time.Duration) (escrow.EnrollmentToken, error) {
	if uses < 0 {
		return escrow.EnrollmentToken{}, escrow.Errorf(escrow.CodeInvalid, "uses: must be 0 (unlimited) or more")
	}
	if validFor < 0 {
		return escrow.EnrollmentToken{}, escrow.Errorf(escrow.CodeInvalid, "expires: must be a positive duration")
	}
	tok, err := escrow.NewToken(escrow.TokenEnrollment, db.Rand)
	if err != nil {
		return escrow.EnrollmentToken{}, err
	}
	now := db.Now()
	var usesLeft, expires sql.NullInt64
	if uses > 0 {
		usesLeft = sql.NullInt64{Int64: uses, Valid: true}
	}
	if validFor > 0 {
		expires = nullMicros(now.Add(validFor))
	}
	err = db.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO enrollment_tokens (id, secret_hash, uses_left, expires_at, created_by, created_at)
			VALUES ($1, $2, $3, $4, $5, $6)`, tok.ID, tok.SecretHash(), usesLeft, expires, o.Actor.Name, micros(now)); err != nil {
			return err
		}
		e := o.Event(escrow.ActionEnrollTokenCreate, escrow.OutcomeSuccess)
		e.Detail = "enrollment token " + tok.ID
		return db.appendEvent(ctx, tx, e)
	})
	return escrow.EnrollmentToken{ID: tok.ID, Token: tok}, err
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
