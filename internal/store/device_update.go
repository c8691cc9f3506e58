package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/keyward/keyward/internal/escrow"
)

// UpdateDevice applies an admin's change to a device, in one transaction with its events: a new
// owner (SPEC §5: the person who may see its keys through self-service) or new tags (what a
// helpdesk's scope selects) are one device.update event with the old and the new values; marking
// the device disputed, or clearing the mark, is a device.dispute event. A change that changes
// nothing records nothing. An unknown device is a denied device.update. The caller checks that
// the origin may change devices (admins only). Errors: CodeInvalid naming the field, CodeNotFound.
func (db *DB) UpdateDevice(ctx context.Context, o escrow.Origin, deviceID string, ch escrow.DeviceChange) (escrow.DeviceDetail, error) {
	if err := ch.Validate(); err != nil {
		return escrow.DeviceDetail{}, err
	}
	var out escrow.DeviceDetail
	var refused error
	now := db.Now()
	err := db.write(ctx, func(tx *sql.Tx) error {
		refused = nil
		d, err := findDevice(ctx, tx, deviceID)
		if errors.Is(err, errNoDevice) {
			refused = err
			e := o.Event(escrow.ActionDeviceUpdate, escrow.OutcomeDenied)
			e.DeviceID, e.Detail = deviceID, "no such device"
			return db.appendEvent(ctx, tx, e)
		}
		if err != nil {
			return err
		}
		var changes []string
		if ch.OwnerUPN != nil && *ch.OwnerUPN != d.OwnerUPN {
			if _, err := tx.ExecContext(ctx, `UPDATE devices SET owner_upn = $2, owner_key = $2 WHERE id = $1`, deviceID, *ch.OwnerUPN); err != nil {
				return err
			}
			changes = append(changes, fmt.Sprintf("ownerUpn %q -> %q", d.OwnerUPN, *ch.OwnerUPN))
		}
		if ch.Tags != nil && !slices.Equal(*ch.Tags, d.Tags) {
			if _, err := tx.ExecContext(ctx, `DELETE FROM device_tags WHERE device_id = $1`, deviceID); err != nil {
				return err
			}
			for _, t := range *ch.Tags {
				if _, err := tx.ExecContext(ctx, `INSERT INTO device_tags (device_id, tag) VALUES ($1, $2)`, deviceID, t); err != nil {
					return err
				}
			}
			changes = append(changes, "tags ["+strings.Join(d.Tags, " ")+"] -> ["+strings.Join(*ch.Tags, " ")+"]")
		}
		if len(changes) > 0 {
			e := o.Event(escrow.ActionDeviceUpdate, escrow.OutcomeSuccess)
			e.DeviceID, e.Detail = deviceID, "device "+d.Name+": "+strings.Join(changes, "; ")
			if err := db.appendEvent(ctx, tx, e); err != nil {
				return err
			}
		}
		if ch.Disputed != nil && *ch.Disputed != d.Disputed() {
			e := o.Event(escrow.ActionDeviceDispute, escrow.OutcomeSuccess)
			e.DeviceID = deviceID
			if *ch.Disputed {
				_, err = tx.ExecContext(ctx, `UPDATE devices SET disputed_at = $2, disputed_by = $3, dispute_reason = $4 WHERE id = $1`,
					deviceID, micros(now), o.Actor.Name, ch.DisputeReason)
				e.Reason, e.Detail = ch.DisputeReason, "device "+d.Name+" marked disputed: self-service no longer offers it"
			} else {
				_, err = tx.ExecContext(ctx, `UPDATE devices SET disputed_at = NULL, disputed_by = '', dispute_reason = '' WHERE id = $1`, deviceID)
				e.Detail = "device " + d.Name + ": dispute cleared (was: " + d.DisputeReason + ")"
			}
			if err != nil {
				return err
			}
			if err := db.appendEvent(ctx, tx, e); err != nil {
				return err
			}
		}
		if d, err = findDevice(ctx, tx, deviceID); err != nil {
			return err
		}
		out, err = db.detailOf(ctx, tx, d)
		return err
	})
	if err != nil {
		return escrow.DeviceDetail{}, err
	}
	if refused != nil {
		return escrow.DeviceDetail{}, refused
	}
	return out, nil
}
