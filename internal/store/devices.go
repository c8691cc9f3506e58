package store

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/seal"
)

// Enroll registers a new device with an enrollment token. Errors: CodeInvalid for bad fields,
// CodeUnauthorized for a token that is unknown, used up or expired (one message for all).
func (db *DB) Enroll(ctx context.Context, o escrow.Origin, enrollToken escrow.Token, en escrow.Enrollment) (escrow.Enrolled, error) {
	if err := en.Validate(); err != nil {
		return escrow.Enrolled{}, err
	}
	owner, err := en.CanonicalOwner()
	if err != nil {
		return escrow.Enrolled{}, err
	}
	id, err := db.newID()
	if err != nil {
		return escrow.Enrolled{}, err
	}
	devTok, err := escrow.NewToken(escrow.TokenDevice, db.Rand)
	if err != nil {
		return escrow.Enrolled{}, err
	}
	vk := make([]byte, 32)
	if _, err := io.ReadFull(db.Rand, vk); err != nil {
		return escrow.Enrolled{}, err
	}
	sealedVK, err := db.sealer.Seal(vk, verificationAAD(id))
	if err != nil {
		return escrow.Enrolled{}, escrow.Wrap(escrow.CodeInternal, err, "sealing failed")
	}
	now := db.Now()
	var denied bool
	err = db.write(ctx, func(tx *sql.Tx) error {
		var hash []byte
		var usesLeft, expires, revoked sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT secret_hash, uses_left, expires_at, revoked_at FROM enrollment_tokens WHERE id = $1`, enrollToken.ID).
			Scan(&hash, &usesLeft, &expires, &revoked)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		e := o.Event(escrow.ActionDeviceEnroll, escrow.OutcomeSuccess)
		e.Actor = escrow.Actor{Type: escrow.ActorDevice, ID: id, Name: en.Hostname}
		switch {
		case err != nil, !enrollToken.Matches(hash):
			e.Detail = "enrollment token not valid"
		case revoked.Valid:
			e.Detail = "enrollment token " + enrollToken.ID + " revoked"
		case usesLeft.Valid && usesLeft.Int64 <= 0:
			e.Detail = "enrollment token " + enrollToken.ID + " used up"
		case expires.Valid && fromMicros(expires).Before(now):
			e.Detail = "enrollment token " + enrollToken.ID + " expired"
		}
		if e.Detail != "" {
			denied = true
			e.Outcome = escrow.OutcomeDenied
			e.Actor.ID = ""
			return db.appendEvent(ctx, tx, e)
		}
		if usesLeft.Valid {
			if _, err := tx.ExecContext(ctx, `UPDATE enrollment_tokens SET uses_left = uses_left - 1 WHERE id = $1`, enrollToken.ID); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO devices (id, name, owner_upn, owner_key, serial_number, os_version,
			token_id, token_hash, verification_key, verification_key_wrap, enrolled_at, last_seen_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)`,
			id, en.Hostname, owner, owner, en.SerialNumber, en.OSVersion,
			devTok.ID, devTok.SecretHash(), sealedVK.Ciphertext, sealedVK.WrappedKey, micros(now)); err != nil {
			return err
		}
		e.DeviceID = id
		e.Detail = "enrollment token " + enrollToken.ID
		return db.appendEvent(ctx, tx, e)
	})
	if err != nil {
		return escrow.Enrolled{}, err
	}
	if denied {
		return escrow.Enrolled{}, escrow.Errorf(escrow.CodeUnauthorized, "enrollmentToken: not valid, used up, expired or revoked")
	}
	return escrow.Enrolled{DeviceID: id, DeviceToken: devTok, VerificationKey: vk}, nil
}

// verificationAAD binds a device's sealed verification key to the device.
func verificationAAD(deviceID string) []byte { return seal.AAD("verification", deviceID) }

// AuthenticateDevice returns the principal a device token stands for. Errors: CodeUnauthorized.
func (db *DB) AuthenticateDevice(ctx context.Context, tok escrow.Token) (escrow.Principal, error) {
	var hash []byte
	var id, name string
	// A retired device's token answers exactly like an unknown one.
	err := db.ro.QueryRowContext(ctx, `SELECT id, name, token_hash FROM devices WHERE token_id = $1 AND retired_at IS NULL`, tok.ID).Scan(&id, &name, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		tok.Matches(make([]byte, 32))
		return escrow.Principal{}, errBadToken
	}
	if err != nil {
		return escrow.Principal{}, unavailable(err)
	}
	if !tok.Matches(hash) {
		return escrow.Principal{}, errBadToken
	}
	return escrow.Principal{Actor: escrow.Actor{Type: escrow.ActorDevice, ID: id, Name: name}, DeviceID: id}, nil
}

const deviceColumns = `id, name, owner_upn, serial_number, os_version, enrolled_at, last_seen_at, reported_at,
	retired_at, retired_by, retire_reason, disputed_at, disputed_by, dispute_reason`

func scanDevice(s scanner) (escrow.Device, error) {
	var d escrow.Device
	var enrolled, seen int64
	var reported, retired, disputed sql.NullInt64
	err := s.Scan(&d.ID, &d.Name, &d.OwnerUPN, &d.SerialNumber, &d.OSVersion, &enrolled, &seen, &reported,
		&retired, &d.RetiredBy, &d.RetireReason, &disputed, &d.DisputedBy, &d.DisputeReason)
	d.EnrolledAt, d.LastSeenAt, d.ReportedAt = time.UnixMicro(enrolled).UTC(), time.UnixMicro(seen).UTC(), fromMicros(reported)
	d.RetiredAt, d.DisputedAt = fromMicros(retired), fromMicros(disputed)
	return d, err
}

// findDevice loads one device with its tags. Errors: CodeNotFound.
func findDevice(ctx context.Context, q dbtx, id string) (escrow.Device, error) {
	d, err := scanDevice(q.QueryRowContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return d, errNoDevice
	}
	if err != nil {
		return d, err
	}
	tags, err := loadTags(ctx, q, []string{id})
	d.Tags = tags[id]
	return d, err
}

var errNoDevice = escrow.Errorf(escrow.CodeNotFound, "device: no such device")

func loadTags(ctx context.Context, q dbtx, ids []string) (map[string][]string, error) {
	out := map[string][]string{}
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := q.QueryContext(ctx, `SELECT device_id, tag FROM device_tags WHERE device_id IN (`+placeholders(1, len(ids))+`) ORDER BY tag`, anys(ids)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id, tag string
		if err := rows.Scan(&id, &tag); err != nil {
			return nil, err
		}
		out[id] = append(out[id], tag)
	}
	return out, rows.Err()
}

// GetDevice returns a device with its volumes and status, if the principal's scope allows it.
// Errors: CodeNotFound, CodeForbidden.
func (db *DB) GetDevice(ctx context.Context, p escrow.Principal, id string) (escrow.DeviceDetail, error) {
	var out escrow.DeviceDetail
	err := db.read(ctx, func(tx *sql.Tx) error {
		d, err := findDevice(ctx, tx, id)
		if err != nil {
			return err
		}
		if !p.Scope().Allows(d) {
			return escrow.Errorf(escrow.CodeForbidden, "device: outside your scope")
		}
		out, err = db.detailOf(ctx, tx, d)
		return err
	})
	return out, err
}

// detailOf loads one device's volumes and applies the escrow-status rules.
func (db *DB) detailOf(ctx context.Context, q dbtx, d escrow.Device) (escrow.DeviceDetail, error) {
	details, err := db.withStatus(ctx, q, []escrow.Device{d})
	if err != nil {
		return escrow.DeviceDetail{}, err
	}
	return details[0], nil
}

// ListDevices returns a page of devices in name order, with their status, and the cursor of
// the next page ("" on the last). A status filter cannot be pushed into SQL (it depends on the
// clock), so devices are read in name order until the page is full.
func (db *DB) ListDevices(ctx context.Context, f escrow.DeviceFilter) ([]escrow.DeviceDetail, string, error) {
	if f.Limit <= 0 || f.Limit > 1000 {
		f.Limit = defaultLimit
	}
	var afterName, afterID string
	if f.Cursor != "" {
		parts, err := decodeCursor(f.Cursor, 2)
		if err != nil {
			return nil, "", err
		}
		afterName, afterID = parts[0], parts[1]
	}
	var out []escrow.DeviceDetail
	var next string
	err := db.read(ctx, func(tx *sql.Tx) error {
		for {
			devices, more, err := db.devicePage(ctx, tx, f.Scope, f.Retired, afterName, afterID, f.Limit)
			if err != nil {
				return err
			}
			details, err := db.withStatus(ctx, tx, devices)
			if err != nil {
				return err
			}
			for i, d := range details {
				if f.EscrowStatus != "" && d.Status.Status != f.EscrowStatus {
					continue
				}
				out = append(out, d)
				if len(out) == f.Limit {
					if i < len(details)-1 || more {
						next = encodeCursor(d.Name, d.ID)
					}
					return nil
				}
			}
			if !more {
				return nil
			}
			last := devices[len(devices)-1]
			afterName, afterID = last.Name, last.ID
		}
	})
	return out, next, err
}

// devicePage reads up to n devices in scope, in service or retired, after (afterName, afterID)
// in name order, and whether more follow.
func (db *DB) devicePage(ctx context.Context, tx *sql.Tx, scope escrow.Scope, retired bool, afterName, afterID string, n int) ([]escrow.Device, bool, error) {
	where, args := scopeWhere(scope, "d")
	where = append(where, retiredWhere(retired, "d"))
	if afterID != "" {
		args = append(args, afterName, afterID)
		n1, n2 := "$"+itoa(len(args)-1), "$"+itoa(len(args))
		where = append(where, "(d.name > "+n1+" OR (d.name = "+n1+" AND d.id > "+n2+"))")
	}
	query := `SELECT ` + prefixColumns("d.", deviceColumns) + ` FROM devices d`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY d.name, d.id LIMIT " + itoa(n+1)
	devices, err := queryDevices(ctx, tx, query, args)
	if err != nil {
		return nil, false, err
	}
	if len(devices) > n {
		return devices[:n], true, nil
	}
	return devices, false, nil
}

// queryAll runs a query and scans every row with scan.
func queryAll[T any](ctx context.Context, q dbtx, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func queryDevices(ctx context.Context, q dbtx, query string, args []any) ([]escrow.Device, error) {
	devices, err := queryAll(ctx, q, scanDevice, query, args...)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(devices))
	for i, d := range devices {
		ids[i] = d.ID
	}
	tags, err := loadTags(ctx, q, ids)
	for i := range devices {
		devices[i].Tags = tags[devices[i].ID]
	}
	return devices, err
}

// retiredWhere is the SQL condition selecting the devices in service (retired false) or the
// retired ones, on the devices table aliased as alias. Retired devices leave the compliance
// views (device list, escrow report, census) unless asked for.
func retiredWhere(retired bool, alias string) string {
	if retired {
		return alias + ".retired_at IS NOT NULL"
	}
	return alias + ".retired_at IS NULL"
}

// scopeWhere turns a scope into SQL conditions on the devices table aliased as alias.
func scopeWhere(s escrow.Scope, alias string) ([]string, []any) {
	var where []string
	var args []any
	switch {
	case s.All:
	case s.OwnerUPN != "":
		// The one comparison of an owner with a sign-in name: owner_key = canonical(email). A
		// name without a canonical form owns nothing (and never the devices without an owner).
		key := nameKey(s.OwnerUPN)
		if key == "" {
			return []string{"1 = 0"}, nil
		}
		where, args = []string{alias + ".owner_key = $1"}, []any{key}
	case len(s.Tags) > 0:
		where, args = []string{alias + ".id IN (SELECT device_id FROM device_tags WHERE tag IN (" + placeholders(1, len(s.Tags)) + "))"}, anys(s.Tags)
	default:
		return []string{"1 = 0"}, nil
	}
	if s.Undisputed {
		where = append(where, alias+".disputed_at IS NULL")
	}
	return where, args
}

// withStatus loads the volumes of the devices and applies the escrow-status rules.
func (db *DB) withStatus(ctx context.Context, q dbtx, devices []escrow.Device) ([]escrow.DeviceDetail, error) {
	out := make([]escrow.DeviceDetail, len(devices))
	if len(devices) == 0 {
		return out, nil
	}
	settings, err := loadSettings(ctx, q)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(devices))
	for i, d := range devices {
		ids[i] = d.ID
	}
	states, err := loadVolumeStates(ctx, q, ids)
	if err != nil {
		return nil, err
	}
	now := db.Now()
	for i, d := range devices {
		out[i].Device = d
		var present []escrow.VolumeState
		for _, vs := range states[d.ID] {
			vd := escrow.VolumeDetail{Volume: vs.Volume, Status: escrow.VolumeStatus(vs, now, settings.EscrowGracePeriod)}
			out[i].Volumes = append(out[i].Volumes, vd)
			if vs.Volume.Present {
				present = append(present, vs)
			}
		}
		if d.ReportedAt.IsZero() {
			present = states[d.ID]
		}
		out[i].Status = escrow.DeviceStatus(d, present, now, settings.EscrowGracePeriod)
	}
	return out, nil
}

// loadVolumeStates loads what the status rules need for every volume of the devices.
func loadVolumeStates(ctx context.Context, q dbtx, ids []string) (map[string][]escrow.VolumeState, error) {
	in := placeholders(1, len(ids))
	rows, err := q.QueryContext(ctx, `SELECT device_id, volume_id, mount_point, volume_type, protection_status, encryption_status,
		lock_status, present, missing_escrow_since, failure, failure_at FROM volumes WHERE device_id IN (`+in+`) ORDER BY device_id, mount_point, volume_id`, anys(ids)...)
	if err != nil {
		return nil, err
	}
	type volKey struct{ device, volume string }
	index := map[volKey]*escrow.VolumeState{}
	var order []volKey
	states := map[volKey]*escrow.VolumeState{}
	for rows.Next() {
		var v escrow.Volume
		var vt, ps, es, ls string
		var missing, failureAt sql.NullInt64
		if err := rows.Scan(&v.DeviceID, &v.ID, &v.MountPoint, &vt, &ps, &es, &ls, &v.Present, &missing, &v.Failure, &failureAt); err != nil {
			rows.Close()
			return nil, err
		}
		v.Type, v.ProtectionStatus, v.EncryptionStatus = escrow.VolumeType(vt), escrow.ProtectionStatus(ps), escrow.EncryptionStatus(es)
		v.LockStatus = escrow.LockStatus(ls)
		v.MissingEscrowSince, v.FailureAt = fromMicros(missing), fromMicros(failureAt)
		k := volKey{v.DeviceID, v.ID}
		states[k] = &escrow.VolumeState{Volume: v}
		index[k] = states[k]
		order = append(order, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}

	rows, err = q.QueryContext(ctx, `SELECT device_id, volume_id, key_id, type FROM protectors WHERE device_id IN (`+in+`) ORDER BY device_id, volume_id, key_id`, anys(ids)...)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var k volKey
		var p escrow.Protector
		var t string
		if err := rows.Scan(&k.device, &k.volume, &p.KeyID, &t); err != nil {
			rows.Close()
			return nil, err
		}
		p.Type = escrow.ProtectorType(t)
		if s := index[k]; s != nil {
			s.Volume.Protectors = append(s.Volume.Protectors, p)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}

	rows, err = q.QueryContext(ctx, `SELECT DISTINCT device_id, volume_id FROM recovery_keys
		WHERE device_id IN (`+in+`) AND status = 'active' AND verification = 'mismatch'`, anys(ids)...)
	if err != nil {
		return nil, err
	}
	if err := markVolumes(rows, func(d, v string) {
		if s := index[volKey{d, v}]; s != nil {
			s.Mismatch = true
		}
	}); err != nil {
		return nil, err
	}

	rows, err = q.QueryContext(ctx, `SELECT device_id, volume_id, requested_at FROM rotations
		WHERE device_id IN (`+in+`) AND status IN ('requested', 'delivered')`, anys(ids)...)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var k volKey
		var at int64
		if err := rows.Scan(&k.device, &k.volume, &at); err != nil {
			rows.Close()
			return nil, err
		}
		if s := index[k]; s != nil {
			s.RotationOpen, s.RotationSince = true, time.UnixMicro(at).UTC()
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}

	out := map[string][]escrow.VolumeState{}
	for _, k := range order {
		out[k.device] = append(out[k.device], *states[k])
	}
	return out, nil
}

func markVolumes(rows *sql.Rows, mark func(device, volume string)) error {
	defer rows.Close()
	for rows.Next() {
		var d, v string
		if err := rows.Scan(&d, &v); err != nil {
			return err
		}
		mark(d, v)
	}
	return rows.Err()
}

func anys(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

func prefixColumns(prefix, columns string) string {
	parts := strings.Split(columns, ", ")
	for i := range parts {
		parts[i] = prefix + parts[i]
	}
	return strings.Join(parts, ", ")
}
