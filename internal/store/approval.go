package store

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// Two-person approval. A staff person's view that the settings hold (NeedsApproval) finds or
// makes the person's request for the device; another staff person decides it; an approved
// request is used up by one view before it expires. Each step is one transaction with its
// event (key.request, key.approve or key.deny, key.read naming request=<id>). Expiry is read
// from expires_at at every step, so a lapsed request is refused at once without a job, and it
// records no event: nothing happened, and the request's own event says when it was made and
// approved.

const approvalColumns = `a.id, a.device_id, d.name, a.requester, a.reason, a.ticket, a.status, a.created_at, a.expires_at,
	a.decided_by, a.decided_at, a.decision_reason, a.used_at`

const approvalFrom = ` FROM approvals a JOIN devices d ON d.id = a.device_id`

func scanApproval(s scanner) (escrow.Approval, error) {
	var a escrow.Approval
	var status string
	var created, expires int64
	var decided, used sql.NullInt64
	err := s.Scan(&a.ID, &a.DeviceID, &a.DeviceName, &a.Requester, &a.Reason, &a.Ticket, &status, &created, &expires,
		&a.DecidedBy, &decided, &a.DecisionReason, &used)
	a.Status = escrow.ApprovalStatus(status)
	a.CreatedAt, a.ExpiresAt = time.UnixMicro(created).UTC(), time.UnixMicro(expires).UTC()
	a.DecidedAt, a.UsedAt = fromMicros(decided), fromMicros(used)
	return a, err
}

// withStatusAt gives a the status it has at now (expired where it lapsed).
func withStatusAt(a escrow.Approval, now time.Time) escrow.Approval {
	a.Status = a.StatusAt(now)
	return a
}

// openApproval returns the requester's open request for the device (approved before pending),
// or sql.ErrNoRows.
func openApproval(ctx context.Context, tx dbtx, deviceID, requester string, now time.Time) (escrow.Approval, error) {
	return scanApproval(tx.QueryRowContext(ctx, `SELECT `+approvalColumns+approvalFrom+`
		WHERE a.device_id = $1 AND a.requester = $2 AND a.status IN ('approved', 'pending') AND a.expires_at > $3
		ORDER BY a.status, a.created_at LIMIT 1`, deviceID, requester, micros(now)))
}

// requestApproval returns the requester's open request for the device, or makes a pending one
// with its key.request event (created true).
func (db *DB) requestApproval(ctx context.Context, tx dbtx, o escrow.Origin, d escrow.Device, a escrow.Access, s escrow.Settings, now time.Time) (escrow.Approval, bool, error) {
	requester := o.Actor.Name
	open, err := openApproval(ctx, tx, d.ID, requester, now)
	if err == nil {
		return open, false, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return open, false, err
	}
	id, err := db.newID()
	if err != nil {
		return escrow.Approval{}, false, err
	}
	now = now.UTC().Truncate(time.Microsecond)
	ap := escrow.Approval{ID: id, DeviceID: d.ID, DeviceName: d.Name, Requester: requester, Reason: a.Reason,
		Ticket: strings.TrimSpace(a.Ticket), Status: escrow.ApprovalPending, CreatedAt: now, ExpiresAt: now.Add(s.ApprovalTTL)}
	if _, err := tx.ExecContext(ctx, `INSERT INTO approvals (id, device_id, requester, reason, ticket, status, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, ap.ID, ap.DeviceID, ap.Requester, ap.Reason, ap.Ticket, string(ap.Status),
		micros(ap.CreatedAt), micros(ap.ExpiresAt)); err != nil {
		return ap, false, err
	}
	e := o.Event(escrow.ActionKeyRequest, escrow.OutcomeSuccess)
	e.DeviceID, e.Reason, e.Ticket, e.Detail = d.ID, ap.Reason, ap.Ticket, "request="+ap.ID
	return ap, true, db.appendEvent(ctx, tx, e)
}

// approvalFor is the approval step of a disclosure: the ID of the requester's approved request
// for the device, now used up, or (with no such request) the pending request the view waits
// for.
func (db *DB) approvalFor(ctx context.Context, tx dbtx, o escrow.Origin, d escrow.Device, a escrow.Access, s escrow.Settings, now time.Time) (string, *escrow.Approval, error) {
	ap, _, err := db.requestApproval(ctx, tx, o, d, a, s, now)
	if err != nil {
		return "", nil, err
	}
	if ap.Status != escrow.ApprovalApproved {
		return "", &ap, nil
	}
	res, err := tx.ExecContext(ctx, `UPDATE approvals SET status = 'used', used_at = $2 WHERE id = $1 AND status = 'approved'`, ap.ID, micros(now))
	if err != nil {
		return "", nil, err
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return "", nil, escrow.Errorf(escrow.CodeInternal, "approval %s changed while it was used", ap.ID)
	}
	return ap.ID, nil, nil
}

// RequestApproval asks for a second person's approval to view the device's keys, if
// allowed(device) says the principal may view them at all: the requester's open request for
// the device (pending, or approved and not yet used), or a new one with its key.request event.
// The ticket rules apply to a. Errors: CodeNotFound, CodeForbidden (recorded as a denied
// key.request), CodeInvalid, CodeConflict when the settings do not hold a's views for approval.
// created says whether the request is new.
func (db *DB) RequestApproval(ctx context.Context, o escrow.Origin, deviceID string, a escrow.Access, allowed func(escrow.Device, escrow.Settings) bool) (out escrow.Approval, created bool, err error) {
	var denied error
	now := db.Now()
	err = db.write(ctx, func(tx *sql.Tx) error {
		out, created, denied = escrow.Approval{}, false, nil
		e := o.Event(escrow.ActionKeyRequest, escrow.OutcomeDenied)
		e.DeviceID, e.Reason, e.Ticket = deviceID, a.Reason, strings.TrimSpace(a.Ticket)
		var d escrow.Device
		var settings escrow.Settings
		var err error
		if d, settings, denied, err = db.admit(ctx, tx, e, a, allowed, "view this device's keys"); denied != nil || err != nil {
			return err
		}
		if !settings.NeedsApproval(a) {
			denied = escrow.Errorf(escrow.CodeConflict, "approval: your views need no approval; view the keys directly")
			return nil
		}
		out, created, err = db.requestApproval(ctx, tx, o, d, a, settings, now)
		return err
	})
	if err != nil {
		return escrow.Approval{}, false, err
	}
	if denied != nil {
		return escrow.Approval{}, false, denied
	}
	return out, created, nil
}

// DecideApproval approves or denies a pending request, if allowed(device) says the principal
// may decide requests for its device and the principal is not the requester (compared by
// sign-in name, so a person's API token is the person too). An approval gives the requester
// one view within the approval time from now; reason is the denier's, optional. The change and
// its key.approve or key.deny event are one transaction; a refusal is that event, denied.
// Errors: CodeNotFound, CodeForbidden, CodeConflict (the request is no longer pending),
// CodeInvalid.
func (db *DB) DecideApproval(ctx context.Context, o escrow.Origin, id string, approve bool, reason string, allowed func(escrow.Device) bool) (escrow.Approval, error) {
	action := escrow.ActionKeyDeny
	if approve {
		action = escrow.ActionKeyApprove
	}
	if err := escrow.CheckText("reason", reason, false, 500); err != nil {
		return escrow.Approval{}, err
	}
	reason = strings.TrimSpace(reason)
	var out escrow.Approval
	var denied error
	now := db.Now()
	err := db.write(ctx, func(tx *sql.Tx) error {
		out, denied = escrow.Approval{}, nil
		e := o.Event(action, escrow.OutcomeDenied)
		e.Reason, e.Detail = reason, "request="+id
		ap, err := scanApproval(tx.QueryRowContext(ctx, `SELECT `+approvalColumns+approvalFrom+` WHERE a.id = $1`, id))
		if errors.Is(err, sql.ErrNoRows) {
			denied, e.Detail = errNoApproval, "no such request "+id
			return db.appendEvent(ctx, tx, e)
		}
		if err != nil {
			return err
		}
		e.DeviceID, e.Ticket = ap.DeviceID, ap.Ticket
		d, err := findDevice(ctx, tx, ap.DeviceID)
		if err != nil {
			return err
		}
		switch {
		case !allowed(d):
			denied, e.Detail = escrow.Errorf(escrow.CodeForbidden, "approval: you may not decide requests for this device"), e.Detail+"; not allowed"
		case escrow.SameName(ap.Requester, o.Actor.Name):
			denied, e.Detail = escrow.Errorf(escrow.CodeForbidden, "approval: this is your own request; another person must decide it"), e.Detail+"; own request"
		case ap.StatusAt(now) != escrow.ApprovalPending:
			st := ap.StatusAt(now)
			denied, e.Detail = escrow.Errorf(escrow.CodeConflict, "approval: the request is %s, not pending", st), e.Detail+"; request "+string(st)
		}
		if denied != nil {
			return db.appendEvent(ctx, tx, e)
		}
		ap.DecidedBy, ap.DecidedAt = o.Actor.Name, now.UTC().Truncate(time.Microsecond)
		if approve {
			set, err := loadSettings(ctx, tx)
			if err != nil {
				return err
			}
			ap.Status, ap.ExpiresAt = escrow.ApprovalApproved, ap.DecidedAt.Add(set.ApprovalTTL)
		} else {
			ap.Status, ap.DecisionReason = escrow.ApprovalDenied, reason
		}
		if _, err := tx.ExecContext(ctx, `UPDATE approvals SET status = $2, decided_by = $3, decided_at = $4, decision_reason = $5, expires_at = $6
			WHERE id = $1 AND status = 'pending'`, ap.ID, string(ap.Status), ap.DecidedBy, micros(ap.DecidedAt), ap.DecisionReason, micros(ap.ExpiresAt)); err != nil {
			return err
		}
		out = ap
		e.Outcome = escrow.OutcomeSuccess
		return db.appendEvent(ctx, tx, e)
	})
	if err != nil {
		return escrow.Approval{}, err
	}
	if denied != nil {
		return escrow.Approval{}, denied
	}
	return out, nil
}

// admit is the start of a view, an approval request and a rotation, whose event e is: the
// settings, their ticket rules for a, the device and whether allowed lets the caller act on it
// ("you may not " + what). A refusal is returned as denied and recorded as e, denied; a refused
// ticket is recorded as nothing, since nothing was attempted on the device.
func (db *DB) admit(ctx context.Context, tx dbtx, e escrow.AuditEvent, a escrow.Access, allowed func(escrow.Device, escrow.Settings) bool,
	what string) (d escrow.Device, s escrow.Settings, denied, err error) {
	if s, err = loadSettings(ctx, tx); err != nil {
		return d, s, nil, err
	}
	if denied = s.CheckTicket(a); denied != nil {
		return d, s, denied, nil
	}
	d, err = findDevice(ctx, tx, e.DeviceID)
	e.Outcome = escrow.OutcomeDenied
	switch {
	case errors.Is(err, errNoDevice):
		denied, e.Detail = err, "no such device"
	case err != nil:
		return d, s, nil, err
	case !allowed(d, s):
		denied, e.Detail = escrow.Errorf(escrow.CodeForbidden, "device: you may not %s", what), "not allowed"
	default:
		return d, s, nil, nil
	}
	return d, s, denied, db.appendEvent(ctx, tx, e)
}

var errNoApproval = escrow.Errorf(escrow.CodeNotFound, "approval: no such request")

// ListApprovals returns a page of requests matching f, each with its status at now, and the
// cursor of the next page ("" on the last). With no status and no requester it lists the
// pending ones. Pending and approved requests of everyone (the queue) come soonest to lapse
// first, as one range of approvals_open whatever the history; every other listing newest
// first. Errors: CodeInvalid for a bad cursor or status.
func (db *DB) ListApprovals(ctx context.Context, f escrow.ApprovalFilter) ([]escrow.Approval, string, error) {
	now := db.Now()
	var where []string
	var args []any
	arg := func(v any) string { args = append(args, v); return "$" + strconv.Itoa(len(args)) }
	status := f.Status
	if status == "" && f.Requester == "" {
		status = escrow.ApprovalPending
	}
	live := f.Requester == "" && (status == escrow.ApprovalPending || status == escrow.ApprovalApproved)
	sortKey, order, after := "a.created_at", "a.created_at DESC, a.id DESC", "<"
	if live {
		sortKey, order, after = "a.expires_at", "a.expires_at, a.id", ">"
	}
	switch status {
	case "":
	case escrow.ApprovalPending, escrow.ApprovalApproved:
		where = append(where, "a.status = "+arg(string(status)), "a.expires_at > "+arg(micros(now)))
	case escrow.ApprovalExpired:
		where = append(where, "a.status IN ('pending', 'approved')", "a.expires_at <= "+arg(micros(now)))
	case escrow.ApprovalDenied, escrow.ApprovalUsed:
		where = append(where, "a.status = "+arg(string(status)))
	default:
		return nil, "", escrow.Errorf(escrow.CodeInvalid, "status: must be pending, approved, denied, used or expired")
	}
	if f.Requester != "" {
		where = append(where, "a.requester = "+arg(f.Requester))
	}
	where = append(where, scopeCond(f.Scope, "d", arg)...)
	if f.Cursor != "" {
		parts, err := decodeCursor(f.Cursor, 2)
		if err != nil {
			return nil, "", err
		}
		at, err := strconv.ParseInt(parts[0], 10, 64)
		if err != nil {
			return nil, "", errBadCursor
		}
		c, i := arg(at), arg(parts[1])
		where = append(where, "("+sortKey+" "+after+" "+c+" OR ("+sortKey+" = "+c+" AND a.id "+after+" "+i+"))")
	}
	limit := f.Limit
	if limit <= 0 || limit > 1000 {
		limit = defaultLimit
	}
	query := `SELECT ` + approvalColumns + approvalFrom + ` WHERE ` + strings.Join(where, " AND ") +
		` ORDER BY ` + order + ` LIMIT ` + strconv.Itoa(limit+1)
	var out []escrow.Approval
	err := db.read(ctx, func(tx *sql.Tx) error {
		out = nil
		rows, err := tx.QueryContext(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			a, err := scanApproval(rows)
			if err != nil {
				return err
			}
			out = append(out, withStatusAt(a, now))
		}
		return rows.Err()
	})
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		last := out[limit-1]
		at := last.CreatedAt
		if live {
			at = last.ExpiresAt
		}
		next = encodeCursor(strconv.FormatInt(micros(at), 10), last.ID)
	}
	return out, next, nil
}

// CountPendingApprovals counts the pending requests inside scope that someone other than
// requester made: the queue the person could decide.
func (db *DB) CountPendingApprovals(ctx context.Context, scope escrow.Scope, requester string) (int, error) {
	var args []any
	arg := func(v any) string { args = append(args, v); return "$" + strconv.Itoa(len(args)) }
	where := append([]string{"a.status = 'pending'", "a.expires_at > " + arg(micros(db.Now())), "a.requester <> " + arg(requester)},
		scopeCond(scope, "d", arg)...)
	var n int
	err := db.read(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `SELECT COUNT(*)`+approvalFrom+` WHERE `+strings.Join(where, " AND "), args...).Scan(&n)
	})
	return n, err
}
