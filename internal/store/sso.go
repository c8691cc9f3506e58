package store

import (
	"context"
	"database/sql"
	"errors"

	"github.com/keyward/keyward/internal/escrow"
)

// This file holds who a single sign-on is. The threat is an identity provider user who is not
// the person they claim to be: a provider that lets anyone set their email address (many do,
// and mark it unverified, or leave email_verified out), or a second identity with a recycled
// address. So a person is found by the pair (issuer, sub) stored at their first link, never by
// email; an email decides only at the first sign-on, only when verified, and only for a person
// who has no local password, since linking would hand that account to whoever controls the
// provider's record.

// Messages of the refusals, shown in the portal.
const (
	msgSSOUnverified = "Sign-in refused: your identity provider did not confirm your email address, so Keyward cannot tell who you are. Ask your IT helpdesk."
	msgSSONoAccess   = "Your account has no access to Keyward. Ask an administrator to add you to a group that has."
	msgSSOBadName    = "Your identity provider gave a sign-in name Keyward cannot use (only letters, digits and ASCII punctuation)."
	msgSSOPassword   = "An account with a password already uses this email address. Ask an administrator to link it to single sign-on."
	msgSSOLinked     = "This email address belongs to an account that signs on with another identity. Ask an administrator."
)

// SSOUser returns the person a verified single sign-on stands for, and records every refusal as
// a denied auth.signin in the same transaction:
//   - a person linked to (issuer, sub) is that person, whatever the token's email says;
//   - otherwise a first sign-on needs an email that is verified (exactly true) and canonical; it
//     creates the person, or links the one with that email if they have no local password and no
//     other identity, or if an admin allowed the link (AllowSSOLink), which clears the password;
//   - the role follows the claims (the provider's groups are the source of truth), except that a
//     token without a role claim leaves it as it is, and the last enabled admin is never demoted:
//     that part is refused and recorded as a denied user.role, and the person signs in as admin.
//
// A disabled person stays disabled, whatever the provider says. Errors: CodeInvalid for an
// unusable token, CodeUnauthorized for a refusal (its message is for the person).
func (db *DB) SSOUser(ctx context.Context, o escrow.Origin, s escrow.SSOSignOn) (escrow.User, error) {
	if s.Issuer == "" {
		return escrow.User{}, escrow.Errorf(escrow.CodeInvalid, "iss: required")
	}
	if err := escrow.CheckText("sub", s.Subject, true, 255); err != nil {
		return escrow.User{}, err
	}
	if s.Role != "" && !s.Role.Valid() {
		return escrow.User{}, escrow.Errorf(escrow.CodeInvalid, "role: must be one of admin, helpdesk, auditor, user")
	}
	newID, err := db.newID()
	if err != nil {
		return escrow.User{}, err
	}
	var u escrow.User
	var refusal error
	err = db.write(ctx, func(tx *sql.Tx) error {
		refusal = nil
		refuse := func(detail, message string) error {
			refusal = escrow.Errorf(escrow.CodeUnauthorized, "%s", message)
			e := o.Event(escrow.ActionSignIn, escrow.OutcomeDenied)
			e.Detail = "single sign-on: " + detail
			return db.appendEvent(ctx, tx, e)
		}
		var err error
		u, err = scanUser(tx.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE sso_issuer = $1 AND sso_subject = $2`, s.Issuer, s.Subject))
		switch {
		case err == nil && u.Disabled():
			return refuse("the account is disabled", msgSSONoAccess)
		case err == nil:
			return db.syncSSORole(ctx, tx, o, &u, s)
		case !errors.Is(err, errNoUser):
			return err
		}

		// The first sign-on of this identity: only a verified email may decide who it is.
		if !s.EmailVerified || s.Email == "" {
			if s.Email == "" {
				return refuse("no email claim", msgSSOUnverified)
			}
			return refuse("the email address "+escrow.CleanText(s.Email)+" is not verified by the identity provider", msgSSOUnverified)
		}
		email, err := signInName("email", s.Email)
		if err != nil {
			return refuse("unusable email claim: "+escrow.ErrorMessage(err), msgSSOBadName)
		}
		var password, linkedTo string
		var allowed sql.NullInt64
		u, err = scanUser(tx.QueryRowContext(ctx, `SELECT `+userColumns+`, password_hash, sso_subject, sso_link_allowed_at FROM users WHERE email_key = $1`, email),
			&password, &linkedTo, &allowed)
		switch {
		case errors.Is(err, errNoUser):
			if s.Role == "" {
				return refuse("no role for the claims", msgSSONoAccess)
			}
			u = escrow.User{ID: newID, Email: email, Role: s.Role, ScopeTags: []string{}, CreatedAt: db.Now().UTC()}
			if _, err := tx.ExecContext(ctx, `INSERT INTO users (id, email, email_key, role, scope_tags, password_hash, created_at, sso_issuer, sso_subject)
				VALUES ($1, $2, $2, $3, '[]', '', $4, $5, $6)`, u.ID, u.Email, string(s.Role), micros(u.CreatedAt), s.Issuer, s.Subject); err != nil {
				return err
			}
			e := o.Event(escrow.ActionUserCreate, escrow.OutcomeSuccess)
			e.Actor = escrow.Actor{Type: escrow.ActorUser, ID: u.ID, Name: u.Email}
			e.Detail = "user " + u.Email + " with role " + string(s.Role) + " at first single sign-on, as " + escrow.CleanText(s.Subject) + " of " + s.Issuer
			return db.appendEvent(ctx, tx, e)
		case err != nil:
			return err
		case u.Disabled():
			return refuse("the account is disabled", msgSSONoAccess)
		case linkedTo != "" && !allowed.Valid:
			return refuse("user "+u.Email+" is linked to another single sign-on identity", msgSSOLinked)
		case password != "" && !allowed.Valid:
			return refuse("user "+u.Email+" has a local password; an admin must allow the link (keyward users link-sso)", msgSSOPassword)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET sso_issuer = $2, sso_subject = $3, password_hash = '', sso_link_allowed_at = NULL WHERE id = $1`,
			u.ID, s.Issuer, s.Subject); err != nil {
			return err
		}
		e := o.Event(escrow.ActionUserSSOLink, escrow.OutcomeSuccess)
		e.Actor = escrow.Actor{Type: escrow.ActorUser, ID: u.ID, Name: u.Email}
		e.Detail = "user " + u.Email + " linked to single sign-on as " + escrow.CleanText(s.Subject) + " of " + s.Issuer
		switch {
		case password != "":
			e.Detail += "; local password removed, as an admin allowed"
		case linkedTo != "":
			e.Detail += ", replacing the earlier identity, as an admin allowed"
		}
		if err := db.appendEvent(ctx, tx, e); err != nil {
			return err
		}
		return db.syncSSORole(ctx, tx, o, &u, s)
	})
	if err == nil && refusal != nil {
		err = refusal
	}
	return u, err
}

// syncSSORole sets the person's role to the one the claims map to, unless the token carries no
// role claim or the change would demote the last enabled admin (recorded as refused).
func (db *DB) syncSSORole(ctx context.Context, tx *sql.Tx, o escrow.Origin, u *escrow.User, s escrow.SSOSignOn) error {
	if !s.RoleClaimed || s.Role == "" || s.Role == u.Role {
		return nil
	}
	e := o.Event(escrow.ActionUserRole, escrow.OutcomeSuccess)
	e.Actor = escrow.Actor{Type: escrow.ActorUser, ID: u.ID, Name: u.Email}
	e.Detail = "user " + u.Email + " role " + string(u.Role) + " -> " + string(s.Role) + " from the identity provider's claims"
	if u.Role == escrow.RoleAdmin {
		var admins int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled_at IS NULL`).Scan(&admins); err != nil {
			return err
		}
		if admins <= 1 {
			e.Outcome = escrow.OutcomeDenied
			e.Detail += " refused: " + u.Email + " is the last enabled admin; they stay admin"
			return db.appendEvent(ctx, tx, e)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE users SET role = $2 WHERE id = $1`, u.ID, string(s.Role)); err != nil {
		return err
	}
	u.Role = s.Role
	return db.appendEvent(ctx, tx, e)
}

// AllowSSOLink lets the person with this sign-in name be linked at their next single sign-on
// with a verified email even though they have a local password (which the link then removes)
// or are linked to another identity (which the link replaces). Until then nothing changes: the
// password keeps working. Audited as user.sso_link_allow. Errors: CodeNotFound, CodeInvalid.
func (db *DB) AllowSSOLink(ctx context.Context, o escrow.Origin, email string) (escrow.User, error) {
	key, err := escrow.CanonicalName("email", email)
	if err != nil {
		return escrow.User{}, err
	}
	var u escrow.User
	err = db.write(ctx, func(tx *sql.Tx) error {
		var err error
		if u, err = findUserByEmail(ctx, tx, key); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET sso_link_allowed_at = $2 WHERE id = $1`, u.ID, micros(db.Now())); err != nil {
			return err
		}
		e := o.Event(escrow.ActionUserSSOLinkAllow, escrow.OutcomeSuccess)
		e.Detail = "user " + u.Email + " may be linked at their next single sign-on with a verified email; a local password is removed then"
		return db.appendEvent(ctx, tx, e)
	})
	return u, err
}
