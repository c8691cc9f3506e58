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
// an invalid one changes nothing. Errors: CodeInvalid naming the setting.
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
		var parts []string
		for _, name := range names {
			if err := out.Set(name, change[name]); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO settings (name, value) VALUES ($1, $2)
				ON CONFLICT (name) DO UPDATE SET value = excluded.value`, name, out.Get(name)); err != nil {
				return err
			}
			parts = append(parts, name+" "+before.Get(name)+" -> "+out.Get(name))
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
