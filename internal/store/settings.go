package store

import (
	"context"
	"fmt"
	"strconv"

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
		if err := applySetting(&s, name, value); err != nil {
			return s, escrow.Wrap(escrow.CodeInternal, err, "stored settings are damaged")
		}
	}
	return s, rows.Err()
}

func applySetting(s *escrow.Settings, name, value string) error {
	var err error
	switch name {
	case "autoRotateOnDisclosure":
		s.AutoRotateOnDisclosure, err = strconv.ParseBool(value)
	case "selfServiceEnabled":
		s.SelfServiceEnabled, err = strconv.ParseBool(value)
	case "retentionPeriod":
		s.RetentionPeriod, err = escrow.ParseDuration(value)
	case "escrowGracePeriod":
		s.EscrowGracePeriod, err = escrow.ParseDuration(value)
	case "rotationTimeout":
		s.RotationTimeout, err = escrow.ParseDuration(value)
	case "maxKeyAge":
		s.MaxKeyAge, err = escrow.ParseDuration(value)
	default:
		err = fmt.Errorf("unknown setting %q", name)
	}
	return err
}
