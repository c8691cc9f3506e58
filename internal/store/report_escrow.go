package store

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// EscrowReport is the whole escrow report for scope, its list collected in Problems: for callers
// that want it all in memory (tests, small installations). StreamEscrowReport streams it.
func (db *DB) EscrowReport(ctx context.Context, scope escrow.Scope) (escrow.EscrowReport, error) {
	var problems []escrow.ReportProblem
	rep, err := db.StreamEscrowReport(ctx, scope, escrow.ReportPage{}, nil, func(p escrow.ReportProblem) error {
		problems = append(problems, p)
		return nil
	})
	rep.Problems = problems
	return rep, err
}

// StreamEscrowReport counts the devices in service in scope by escrow status, hands the counts
// to head (unless nil) and then streams to fn the devices that are failed, missing escrow, or
// pending for longer than the grace period, the longest-standing first (escrow.ListedFrom),
// page.Limit of them after page.Cursor (0: all), from one snapshot. The counts are the counters the status triggers keep (status.go), or for
// a scope limited to tags an index count of its devices; the list is a range of an index read a
// batch at a time, so neither walks the fleet and memory stays flat however long the list.
// The answer's NextCursor continues the list ("" at its end). Errors: CodeInvalid for a bad
// cursor, and whatever fn returns.
func (db *DB) StreamEscrowReport(ctx context.Context, scope escrow.Scope, page escrow.ReportPage,
	head func(escrow.EscrowReport) error, fn func(escrow.ReportProblem) error) (escrow.EscrowReport, error) {
	var afterAt int64 = -1 << 62
	afterID := ""
	if page.Cursor != "" {
		parts, err := decodeCursor(page.Cursor, 2)
		if err != nil {
			return escrow.EscrowReport{}, err
		}
		if afterAt, err = strconv.ParseInt(parts[0], 10, 64); err != nil {
			return escrow.EscrowReport{}, errBadCursor
		}
		afterID = parts[1]
	}
	var rep escrow.EscrowReport
	err := db.read(ctx, func(tx *sql.Tx) error {
		now := db.Now()
		rep = escrow.EscrowReport{GeneratedAt: now}
		settings, err := loadSettings(ctx, tx)
		if err != nil {
			return err
		}
		if rep.Counts, err = statusCounts(ctx, tx, scope, now); err != nil {
			return err
		}
		for _, n := range rep.Counts {
			rep.Total += n
		}
		if head != nil {
			if err := head(rep); err != nil {
				return err
			}
		}
		sent := 0
		var lastAt int64
		var lastID string
		for {
			batch := statusBatch
			if page.Limit > 0 {
				batch = min(batch, page.Limit-sent+1)
			}
			var args []any
			arg := func(v any) string { args = append(args, v); return "$" + itoa(len(args)) }
			where := append(scopeCond(scope, "d", arg), "d.retired_at IS NULL", "d.listed_from IS NOT NULL",
				"d.listed_from <= "+arg(micros(now)))
			at, id := arg(afterAt), arg(afterID)
			where = append(where, "(d.listed_from > "+at+" OR (d.listed_from = "+at+" AND d.id > "+id+"))")
			rows, err := tx.QueryContext(ctx, `SELECT `+prefixColumns("d.", deviceColumns+", "+storedColumns)+` FROM devices d WHERE `+
				strings.Join(where, " AND ")+` ORDER BY d.listed_from, d.id LIMIT `+itoa(batch), args...)
			if err != nil {
				return err
			}
			var devices []escrow.Device
			var stored []storedStatus
			var listed []int64
			for rows.Next() {
				d, st, err := scanStored(rows)
				if err != nil {
					rows.Close()
					return err
				}
				devices, stored, listed = append(devices, d), append(stored, st), append(listed, st.liste.Int64)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			details, err := withStored(ctx, tx, devices, stored, now, settings)
			if err != nil {
				return err
			}
			for i, d := range details {
				problem := escrow.ProblemAt(d.Status, now, settings.EscrowGracePeriod)
				if problem == "" {
					continue // not reachable while the stored status holds to the rules
				}
				if page.Limit > 0 && sent == page.Limit {
					rep.NextCursor = encodeCursor(strconv.FormatInt(lastAt, 10), lastID)
					return nil
				}
				if err := fn(escrow.ReportProblem{Device: d.Device, Status: d.Status, Problem: problem}); err != nil {
					return err
				}
				sent++
				lastAt, lastID = listed[i], d.ID
			}
			if len(devices) < batch {
				return nil
			}
			afterAt, afterID = listed[len(listed)-1], devices[len(devices)-1].ID
		}
	})
	if err != nil {
		return escrow.EscrowReport{}, err
	}
	return rep, nil
}

// addTags loads the tags of the devices.
func addTags(ctx context.Context, q dbtx, devices []escrow.Device) error {
	ids := make([]string, len(devices))
	for i, d := range devices {
		ids[i] = d.ID
	}
	tags, err := loadTags(ctx, q, ids)
	for i := range devices {
		devices[i].Tags = tags[devices[i].ID]
	}
	return err
}

// statusCounts counts the devices in service in scope by escrow status at now. For the whole
// fleet these are the counters of status_counts; for a scope of tags, a count of the index of
// its devices. Either way, pending rows whose status_until has come are counted as failed.
func statusCounts(ctx context.Context, tx dbtx, scope escrow.Scope, now time.Time) (map[escrow.EscrowStatus]int, error) {
	counts := escrow.NewStatusCounts()
	var args []any
	arg := func(v any) string { args = append(args, v); return "$" + itoa(len(args)) }
	query := `SELECT status, n FROM status_counts WHERE kind = 'device'`
	where := append(scopeCond(scope, "d", arg), "d.retired_at IS NULL")
	if !scope.All {
		query = `SELECT d.escrow_status, COUNT(*) FROM devices d WHERE ` + strings.Join(where, " AND ") + ` GROUP BY d.escrow_status`
	}
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			rows.Close()
			return nil, err
		}
		if escrow.EscrowStatus(st).Valid() {
			counts[escrow.EscrowStatus(st)] = n
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var overdue int
	where = append(where, "d.status_until IS NOT NULL", "d.status_until <= "+arg(micros(now)))
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM devices d WHERE `+strings.Join(where, " AND "), args...).Scan(&overdue); err != nil {
		return nil, err
	}
	counts[escrow.StatusPending] -= overdue
	counts[escrow.StatusFailed] += overdue
	return counts, nil
}

// Census counts every device in service by escrow status and every key by status, in one
// snapshot: a few rows of counters and one index range, whatever the size of the fleet.
func (db *DB) Census(ctx context.Context) (escrow.Census, error) {
	c := escrow.Census{Keys: map[escrow.KeyStatus]int{escrow.KeyActive: 0, escrow.KeySuperseded: 0, escrow.KeyPurged: 0}}
	err := db.read(ctx, func(tx *sql.Tx) error {
		var err error
		if c.Devices, err = statusCounts(ctx, tx, escrow.Scope{All: true}, db.Now()); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT status, n FROM status_counts WHERE kind = 'key'`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var st escrow.KeyStatus
			var n int
			if err := rows.Scan(&st, &n); err != nil {
				return err
			}
			c.Keys[st] = n
		}
		return rows.Err()
	})
	if err != nil {
		return escrow.Census{}, err
	}
	return c, nil
}
