package store

import (
	"context"
	"database/sql"
	"slices"
	"strings"

	"github.com/keyward/keyward/internal/escrow"
)

// loadSettings reads the settings inside a transaction, so that a decision and the settings
// it rests on come from one snapshot.
func loadSettings(ctx context.Context, q dbtx) (escrow.Settings, error) {
	s := escrow.DefaultSettings()
	rows, err := q.QueryContext(ctx, `SELECT name, value FROM settings`)
	if err != nil {
		return s, err
	}
	defer rows.Close()
	for rows.Next() {
		var name, value string
		if err := rows.Scan(&name, &value); err != nil {
			return s, err
		}
		if err := s.Set(name, value); err != nil {
			return s, escrow.Wrap(escrow.CodeInternal, err, "stored settings are damaged")
		}
	}
	return s, rows.Err()
}

// Settings returns the current settings.
func (db *DB) Settings(ctx context.Context) (escrow.Settings, error) {
	var s escrow.Settings
	err := db.read(ctx, func(tx *sql.Tx) error {
		var err error
		s, err = loadSettings(ctx, tx)
		return err
	})
	return s, err
}

// UpdateSettings changes the settings named in change (name to value, in the API's form) in
// one transaction with its audit event. Every value is checked before anything is written, so
// an invalid one changes nothing. A change of incidentModeUntil is its own event,
// incident.start or incident.stop, so the trail shows who switched incident mode on and off;
// a new end must lie in the future and at most escrow.MaxIncident ahead. Errors: CodeInvalid
// naming the setting.
func (db *DB) UpdateSettings(ctx context.Context, o escrow.Origin, change map[string]string) (escrow.Settings, error) {
	names := make([]string, 0, len(change))
	for name, value := range change {
		probe := escrow.DefaultSettings()
		if err := probe.Set(name, value); err != nil {
			return escrow.Settings{}, err
		}
		names = append(names, name)
	}
	slices.Sort(names)
	var out escrow.Settings
	rederived := 0
	err := db.write(ctx, func(tx *sql.Tx) error {
		before, err := loadSettings(ctx, tx)
		if err != nil {
			return err
		}
		out = before
		now := db.Now()
		var parts []string
		var incident *escrow.AuditEvent
		for _, name := range names {
			if err := out.Set(name, change[name]); err != nil {
				return err
			}
			if out.Get(name) == before.Get(name) {
				continue
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO settings (name, value) VALUES ($1, $2)
				ON CONFLICT (name) DO UPDATE SET value = excluded.value`, name, out.Get(name)); err != nil {
				return err
			}
			if name != "incidentModeUntil" {
				parts = append(parts, name+" "+before.Get(name)+" -> "+out.Get(name))
				continue
			}
			until := out.IncidentModeUntil
			if !until.IsZero() && (!until.After(now) || until.Sub(now) > escrow.MaxIncident) {
				return escrow.Errorf(escrow.CodeInvalid, "incidentModeUntil: must be in the future and at most %s ahead", escrow.FormatDuration(escrow.MaxIncident))
			}
			e := o.Event(escrow.ActionIncidentStart, escrow.OutcomeSuccess)
			e.Detail = "incident mode on until " + out.Get(name) + ": no per-address self-service limit"
			if until.IsZero() {
				e = o.Event(escrow.ActionIncidentStop, escrow.OutcomeSuccess)
				e.Detail = "incident mode off"
				if !before.IncidentOn(now) {
					e.Detail += " (it had already ended)"
				}
			}
			incident = &e
		}
		if incident != nil {
			if err := db.appendEvent(ctx, tx, *incident); err != nil {
				return err
			}
		}
		if len(parts) == 0 && incident != nil {
			return nil
		}
		if out.EscrowGracePeriod != before.EscrowGracePeriod || out.RotationTimeout != before.RotationTimeout {
			// The instants at which statuses run out move with these two.
			if rederived, err = rederiveStatuses(ctx, tx, db.Now(), out); err != nil {
				return err
			}
		}
		e := o.Event(escrow.ActionSettingsUpdate, escrow.OutcomeSuccess)
		e.Detail = strings.Join(parts, "; ")
		return db.appendEvent(ctx, tx, e)
	})
	if err == nil && rederived >= largeChange {
		db.optimize(ctx)
	}
	return out, err
}
