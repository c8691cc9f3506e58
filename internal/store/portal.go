package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// This file holds what the web portal needs beyond the escrow services: sessions, single
// sign-on attempts in flight, rate-limit windows, user and role management, device search and
// a device's rotation history.

// Sign-in methods, as sessions and audit details name them.
const (
	MethodPassword = "password"
	MethodSSO      = "sso"
)

// sessionTouchEvery is how stale last_seen_at may get before a request writes it again: the
// idle timeout is measured in minutes, and a write per page view would be wasted work.
const sessionTouchEvery = time.Minute

// UserCredentials returns the user with the sign-in name and the argon2id hash of their
// password ("" for a user who signs in only through single sign-on). A name with no canonical
// form (escrow.CanonicalName) is nobody's. A disabled user is
// returned too, with DisabledAt set: the caller must refuse them. Errors: CodeNotFound.
func (db *DB) UserCredentials(ctx context.Context, email string) (escrow.User, string, error) {
	var u escrow.User
	var role, tags, hash string
	var created int64
	var disabled sql.NullInt64
	err := db.ro.QueryRowContext(ctx, `SELECT id, email, role, scope_tags, password_hash, created_at, disabled_at FROM users WHERE email_key = $1`,
		nameKey(email)).Scan(&u.ID, &u.Email, &role, &tags, &hash, &created, &disabled)
	if errors.Is(err, sql.ErrNoRows) {
		return u, "", errNoUser
	}
	if err != nil {
		return u, "", unavailable(err)
	}
	u.Role, u.CreatedAt, u.DisabledAt = escrow.Role(role), time.UnixMicro(created).UTC(), fromMicros(disabled)
	if err := json.Unmarshal([]byte(tags), &u.ScopeTags); err != nil {
		return u, "", escrow.Wrap(escrow.CodeInternal, err, "stored user is damaged")
	}
	return u, hash, nil
}

var errNoUser = escrow.Errorf(escrow.CodeNotFound, "user: no such user")

// StartSession stores a new session for the user, keyed by the SHA-256 of its token, that
// ends maxAge from now at the latest, and records the successful sign-in in the same
// transaction: no session exists that the audit trail does not know of. Expired sessions and
// abandoned single sign-ons are swept out on the way.
func (db *DB) StartSession(ctx context.Context, o escrow.Origin, userID string, tokenHash []byte, method string, maxAge time.Duration) error {
	if len(tokenHash) != 32 {
		return escrow.Errorf(escrow.CodeInternal, "session token hash must be 32 bytes")
	}
	now := db.Now()
	return db.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE expires_at <= $1`, micros(now)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM sso_logins WHERE expires_at <= $1`, micros(now)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO sessions (token_hash, user_id, method, created_at, last_seen_at, expires_at)
			VALUES ($1, $2, $3, $4, $4, $5)`, tokenHash, userID, method, micros(now), micros(now.Add(maxAge))); err != nil {
			return err
		}
		e := o.Event(escrow.ActionSignIn, escrow.OutcomeSuccess)
		e.Detail = "signed in with " + describeMethod(method)
		return db.appendEvent(ctx, tx, e)
	})
}

func describeMethod(method string) string {
	if method == MethodSSO {
		return "single sign-on"
	}
	return "a password"
}

// SignInDenied records a failed sign-in. detail says why in words that are safe to keep
// forever: never the password that was tried.
func (db *DB) SignInDenied(ctx context.Context, o escrow.Origin, detail string) error {
	e := o.Event(escrow.ActionSignIn, escrow.OutcomeDenied)
	e.Detail = detail
	return db.Record(ctx, e)
}

// SessionPrincipal returns who the session with this token hash belongs to, as the users table
// says now (a role change applies at the next request; a disabled user has no sessions). A session idle for longer than idle, or
// past its absolute end, is deleted. Errors: CodeUnauthorized, one message for every reason.
func (db *DB) SessionPrincipal(ctx context.Context, tokenHash []byte, idle time.Duration) (escrow.Principal, error) {
	var p escrow.Principal
	var role, tags string
	var lastSeen, expires int64
	err := db.ro.QueryRowContext(ctx, `SELECT u.id, u.email, u.role, u.scope_tags, s.last_seen_at, s.expires_at
		FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1 AND u.disabled_at IS NULL`, tokenHash).
		Scan(&p.Actor.ID, &p.Email, &role, &tags, &lastSeen, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return p, errNoSession
	}
	if err != nil {
		return p, unavailable(err)
	}
	now := db.Now()
	if micros(now) >= expires || now.Sub(time.UnixMicro(lastSeen)) >= idle {
		if _, err := db.rw.ExecContext(ctx, `DELETE FROM sessions WHERE token_hash = $1`, tokenHash); err != nil {
			return escrow.Principal{}, unavailable(err)
		}
		return escrow.Principal{}, errNoSession
	}
	if now.Sub(time.UnixMicro(lastSeen)) >= sessionTouchEvery {
		// Not db.write: this is bookkeeping, not an audited change, so it need not queue behind
		// the audit chain's lock on PostgreSQL.
		if _, err := db.rw.ExecContext(ctx, `UPDATE sessions SET last_seen_at = $2 WHERE token_hash = $1`, tokenHash, micros(now)); err != nil {
			return escrow.Principal{}, unavailable(err)
		}
	}
	if err := json.Unmarshal([]byte(tags), &p.ScopeTags); err != nil {
		return escrow.Principal{}, escrow.Wrap(escrow.CodeInternal, err, "stored user is damaged")
	}
	p.Role = escrow.Role(role)
	p.Actor.Type, p.Actor.Name = escrow.ActorUser, p.Email
	return p, nil
}

var errNoSession = escrow.Errorf(escrow.CodeUnauthorized, "session: not signed in, or the session has ended")

// EndSession deletes the session and records the sign-out in the same transaction. Ending a
// session that no longer exists is not an error: the person is signed out either way.
func (db *DB) EndSession(ctx context.Context, o escrow.Origin, tokenHash []byte) error {
	return db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE token_hash = $1`, tokenHash)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return err
		}
		return db.appendEvent(ctx, tx, o.Event(escrow.ActionSignOut, escrow.OutcomeSuccess))
	})
}

func findUserByEmail(ctx context.Context, q dbtx, email string) (escrow.User, error) {
	return scanUser(q.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE email_key = $1`, nameKey(email)))
}

const userColumns = `id, email, role, scope_tags, created_at, disabled_at`

// scanUser reads a row of userColumns, and into extra any columns selected after them.
func scanUser(s scanner, extra ...any) (escrow.User, error) {
	var u escrow.User
	var role, tags string
	var created int64
	var disabled sql.NullInt64
	err := s.Scan(append([]any{&u.ID, &u.Email, &role, &tags, &created, &disabled}, extra...)...)
	if errors.Is(err, sql.ErrNoRows) {
		return u, errNoUser
	}
	if err != nil {
		return u, err
	}
	u.Role, u.CreatedAt, u.DisabledAt = escrow.Role(role), time.UnixMicro(created).UTC(), fromMicros(disabled)
	if err := json.Unmarshal([]byte(tags), &u.ScopeTags); err != nil {
		return u, escrow.Wrap(escrow.CodeInternal, err, "stored user is damaged")
	}
	return u, nil
}

// ListUsers returns every user in sign-in name order. Installations have people in the
// hundreds, not millions, so there is no paging.
func (db *DB) ListUsers(ctx context.Context) ([]escrow.User, error) {
	var out []escrow.User
	err := db.read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT `+userColumns+` FROM users ORDER BY email_key`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			u, err := scanUser(rows)
			if err != nil {
				return err
			}
			out = append(out, u)
		}
		return rows.Err()
	})
	return out, err
}

// SetUserRole changes a user's role and scope tags, audited in the same transaction: UpdateUser
// with those two. Errors: CodeInvalid, CodeNotFound, CodeConflict.
func (db *DB) SetUserRole(ctx context.Context, o escrow.Origin, userID string, role escrow.Role, scopeTags []string) (escrow.User, error) {
	return db.UpdateUser(ctx, o, userID, escrow.UserChange{Role: &role, ScopeTags: &scopeTags})
}

// SaveSSOLogin remembers a single sign-on that is leaving for the identity provider, keyed by
// the SHA-256 of its state parameter, for ttl.
func (db *DB) SaveSSOLogin(ctx context.Context, stateHash []byte, l escrow.SSOLogin, ttl time.Duration) error {
	_, err := db.rw.ExecContext(ctx, `INSERT INTO sso_logins (state_hash, nonce, verifier, return_to, setup_hash, expires_at) VALUES ($1, $2, $3, $4, $5, $6)`,
		stateHash, l.Nonce, l.Verifier, l.ReturnTo, l.SetupHash, micros(db.Now().Add(ttl)))
	if err != nil {
		return unavailable(err)
	}
	return nil
}

// TakeSSOLogin returns and deletes the single sign-on with this state hash: a state is good
// for one callback only, so a replayed callback finds nothing. Errors: CodeNotFound for an
// unknown, used or expired state.
func (db *DB) TakeSSOLogin(ctx context.Context, stateHash []byte) (escrow.SSOLogin, error) {
	var l escrow.SSOLogin
	var expires int64
	err := runTx(ctx, db.rw, nil, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT nonce, verifier, return_to, setup_hash, expires_at FROM sso_logins WHERE state_hash = $1`, stateHash).
			Scan(&l.Nonce, &l.Verifier, &l.ReturnTo, &l.SetupHash, &expires)
		if errors.Is(err, sql.ErrNoRows) {
			return errNoSSOLogin
		}
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM sso_logins WHERE state_hash = $1`, stateHash)
		if err != nil {
			return err
		}
		// Two servers taking the same state at once on PostgreSQL: only the one whose delete
		// removed the row may go on.
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return errors.Join(err, errNoSSOLogin)
		}
		return nil
	})
	if err == nil && micros(db.Now()) >= expires {
		err = errNoSSOLogin
	}
	if err != nil {
		return escrow.SSOLogin{}, err
	}
	return l, nil
}

var errNoSSOLogin = escrow.Errorf(escrow.CodeNotFound, "state: this sign-in was not started here, was already used, or took too long")

// HitRateLimit counts one attempt against bucket in the current fixed window and answers how
// long the caller must wait when the window already holds limit attempts (0: go ahead). The
// count is in the database, so several servers share it. A refused attempt is not counted.
// Windows older than a day are swept out on the way.
func (db *DB) HitRateLimit(ctx context.Context, bucket string, limit int, window time.Duration) (time.Duration, error) {
	return db.HitRateLimits(ctx, window, map[string]int{bucket: limit})
}

// HitRateLimits counts one attempt against every bucket (name to limit) in the current fixed
// window, all or none: when any bucket already holds its limit, nothing is counted and the
// answer is how long until the window ends. The upsert only counts below the limit, and the
// row it locks serializes servers on PostgreSQL, so parallel attempts never pass a limit.
func (db *DB) HitRateLimits(ctx context.Context, window time.Duration, limits map[string]int) (time.Duration, error) {
	if window <= 0 {
		return 0, escrow.Errorf(escrow.CodeInternal, "rate limit must have a positive window and limit")
	}
	buckets := make([]string, 0, len(limits))
	for b, n := range limits {
		if n <= 0 {
			return 0, escrow.Errorf(escrow.CodeInternal, "rate limit must have a positive window and limit")
		}
		buckets = append(buckets, b)
	}
	// One order for every transaction, so two of them never wait on each other's rows.
	slices.Sort(buckets)
	now := db.Now()
	start := now.Truncate(window)
	errOver := errors.New("over the limit")
	err := runTx(ctx, db.rw, nil, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM rate_limits WHERE window_start < $1`, micros(now.Add(-window-24*time.Hour))); err != nil {
			return err
		}
		for _, b := range buckets {
			var hits int64
			err := tx.QueryRowContext(ctx, `INSERT INTO rate_limits (bucket, window_start, hits) VALUES ($1, $2, 1)
				ON CONFLICT (bucket, window_start) DO UPDATE SET hits = rate_limits.hits + 1 WHERE rate_limits.hits < $3
				RETURNING hits`, b, micros(start), limits[b]).Scan(&hits)
			if errors.Is(err, sql.ErrNoRows) {
				return errOver // rolls back what this call counted in the other buckets
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, errOver) {
		return max(start.Add(window).Sub(now), time.Second), nil
	}
	return 0, err
}

// UndoRateLimit takes back one attempt HitRateLimit counted against bucket, for an attempt
// that turned out not to be a failure (a sign-in with the right password, a good enrollment):
// limits that count failures count first and take back after, so that parallel attempts can
// never slip past a limit between a check and a count. It takes the hit from the bucket's
// latest window, which is the one counted unless the window ended in between (then the old
// window keeps the hit: at most one attempt too many, never one too few).
func (db *DB) UndoRateLimit(ctx context.Context, bucket string) error {
	return runTx(ctx, db.rw, nil, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE rate_limits SET hits = hits - 1 WHERE bucket = $1 AND hits > 0
			AND window_start = (SELECT MAX(window_start) FROM rate_limits WHERE bucket = $1)`, bucket)
		return err
	})
}

// SearchDevices is ListDevices narrowed by what a person typed in the portal's search box: the
// start of the device name or of the owner's sign-in name (without regard to case), or the
// start of a key ID (at least escrow.MinKeyIDPrefix characters). Each is a range of an index.
// A search by key ID is a key lookup, so it is recorded as a key.list event before the answer
// goes out.
func (db *DB) SearchDevices(ctx context.Context, o escrow.Origin, f escrow.DeviceFilter, text string) ([]escrow.DeviceDetail, string, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return db.ListDevices(ctx, f)
	}
	if err := escrow.CheckText("q", text, false, 256); err != nil {
		return nil, "", err
	}
	var args []any
	arg := func(v any) string { args = append(args, v); return "$" + itoa(len(args)) }
	prefix := searchKey(text)
	// Every string that starts with prefix sorts from prefix up to prefix followed by the
	// highest code point; the "C" collation (PostgreSQL) and SQLite's compare bytes.
	from, to := arg(prefix), arg(prefix+"\U0010FFFF")
	match := []string{"(d.name_key >= " + from + " AND d.name_key < " + to + ")", "(d.owner_key >= " + from + " AND d.owner_key < " + to + ")"}
	keyPrefix, err := escrow.ParseKeyIDPrefix(text)
	byKey := err == nil
	if byKey {
		match = append(match, `d.id IN (SELECT k.device_id FROM recovery_keys k WHERE k.key_id >= `+arg(keyPrefix)+` AND k.key_id < `+arg(keyPrefix+"~")+`)`)
	}
	out, next, err := db.listDevices(ctx, f, []string{"(" + strings.Join(match, " OR ") + ")"}, args)
	if err != nil {
		return nil, "", err
	}
	if byKey && len(out) > 0 {
		// What tells the devices apart when one key ID leads to several: each match's key,
		// escrowed when, beside the device's serial number, enrollment and last contact.
		if err := db.read(ctx, func(tx *sql.Tx) error { return matchKeys(ctx, tx, out, keyPrefix) }); err != nil {
			return nil, "", err
		}
	}
	if byKey {
		e := o.Event(escrow.ActionKeyList, escrow.OutcomeSuccess)
		e.Detail = "device search by key ID " + keyPrefix + ": " + itoa(len(out)) + " devices"
		if len(keyPrefix) == 36 {
			e.KeyID = keyPrefix
		}
		if err := db.Record(ctx, e); err != nil {
			return nil, "", err
		}
	}
	return out, next, nil
}

// matchKeys fills in the keys of each device that start with the key ID prefix.
func matchKeys(ctx context.Context, tx *sql.Tx, devices []escrow.DeviceDetail, prefix string) error {
	ids := make([]string, len(devices))
	index := map[string]int{}
	for i, d := range devices {
		ids[i], index[d.ID] = d.ID, i
	}
	args := append(anys(ids), prefix, prefix+"~")
	n := len(ids)
	keys, _, err := queryKeys(ctx, tx, `SELECT `+keyColumns+keyFrom+` WHERE k.device_id IN (`+placeholders(1, n)+`)
		AND k.key_id >= $`+itoa(n+1)+` AND k.key_id < $`+itoa(n+2)+` ORDER BY k.id`, args)
	if err != nil {
		return err
	}
	for _, k := range keys {
		d := &devices[index[k.DeviceID]]
		d.MatchedKeys = append(d.MatchedKeys, k)
	}
	return nil
}

// searchKey is the form of a device name that search compares: ASCII letters in lower case, as
// SQL's lower() makes them on both databases for the names Windows gives computers.
func searchKey(name string) string {
	b := []byte(name)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// DeviceRotations returns the device's rotations, newest first, at most limit of them, if the
// principal's scope allows the device. Errors: CodeNotFound, CodeForbidden.
func (db *DB) DeviceRotations(ctx context.Context, p escrow.Principal, deviceID string, limit int) ([]escrow.Rotation, error) {
	if limit <= 0 || limit > 1000 {
		limit = defaultLimit
	}
	var out []escrow.Rotation
	err := db.read(ctx, func(tx *sql.Tx) error {
		d, err := findDevice(ctx, tx, deviceID)
		if err != nil {
			return err
		}
		if !p.Scope().Allows(d) {
			return escrow.Errorf(escrow.CodeForbidden, "device: outside your scope")
		}
		rows, err := tx.QueryContext(ctx, `SELECT `+rotationColumns+` FROM rotations WHERE device_id = $1
			ORDER BY requested_at DESC, id DESC LIMIT `+itoa(limit), deviceID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			r, err := scanRotation(rows)
			if err != nil {
				return err
			}
			out = append(out, r)
		}
		return rows.Err()
	})
	return out, err
}
