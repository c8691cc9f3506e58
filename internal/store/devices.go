package store

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"io"
	"slices"
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
			token_id, token_hash, verification_key, verification_key_wrap, enrolled_at, last_seen_at, name_key)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12)`,
			id, en.Hostname, owner, owner, en.SerialNumber, en.OSVersion,
			devTok.ID, devTok.SecretHash(), sealedVK.Ciphertext, sealedVK.WrappedKey, micros(now), searchKey(en.Hostname)); err != nil {
			return err
		}
		if err := refreshDeviceStatus(ctx, tx, id, now); err != nil {
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

// scanDeviceOnly reads a row of deviceColumns and nothing after them.
func scanDeviceOnly(s scanner) (escrow.Device, error) { return scanDevice(s) }

// scanDevice scans deviceColumns, then any extra columns into extra.
func scanDevice(s scanner, extra ...any) (escrow.Device, error) {
	var d escrow.Device
	var enrolled, seen int64
	var reported, retired, disputed sql.NullInt64
	err := s.Scan(append([]any{&d.ID, &d.Name, &d.OwnerUPN, &d.SerialNumber, &d.OSVersion, &enrolled, &seen, &reported,
		&retired, &d.RetiredBy, &d.RetireReason, &disputed, &d.DisputedBy, &d.DisputeReason}, extra...)...)
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

// ListDevices returns a page of devices in name order, with their status (not their volumes:
// GetDevice has those), and the cursor of the next page ("" on the last). Every filter is an
// index range and the status is the stored one (status.go), so a page costs its own rows
// whatever the size of the fleet.
func (db *DB) ListDevices(ctx context.Context, f escrow.DeviceFilter) ([]escrow.DeviceDetail, string, error) {
	return db.listDevices(ctx, f, nil, nil)
}

// listDevices is ListDevices with more conditions (match, with its arguments numbered from 1)
// on the devices table aliased d.
func (db *DB) listDevices(ctx context.Context, f escrow.DeviceFilter, match []string, matchArgs []any) ([]escrow.DeviceDetail, string, error) {
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
		now := db.Now()
		page, err := db.devicePage(ctx, tx, f, match, matchArgs, now, afterName, afterID, f.Limit+1)
		if err != nil {
			return err
		}
		if len(page) > f.Limit {
			page = page[:f.Limit]
			last := page[len(page)-1].Device
			next = encodeCursor(last.Name, last.ID)
		}
		settings, err := loadSettings(ctx, tx)
		if err != nil {
			return err
		}
		devices, stored := make([]escrow.Device, len(page)), make([]storedStatus, len(page))
		for i, l := range page {
			devices[i], stored[i] = l.Device, l.stored
		}
		if err := addTags(ctx, tx, devices); err != nil {
			return err
		}
		out, err = withStored(ctx, tx, devices, stored, now, settings)
		return err
	})
	return out, next, err
}

// devicePage reads up to n devices of the filter (scope, in service or retired, escrow status
// at now) and the extra conditions, after (afterName, afterID) in name order. Failed is the
// stored failed status or a pending one that ran out: two index ranges, merged here, so that
// neither needs a sort of all its rows.
func (db *DB) devicePage(ctx context.Context, tx *sql.Tx, f escrow.DeviceFilter, match []string, matchArgs []any, now time.Time,
	afterName, afterID string, n int) ([]listedDevice, error) {
	// Each alternative adds its condition, given the function that adds an argument.
	alternatives := []func(arg func(any) string) string{func(func(any) string) string { return "" }}
	switch f.EscrowStatus {
	case "":
	case escrow.StatusFailed:
		alternatives = []func(arg func(any) string) string{
			func(func(any) string) string { return "d.escrow_status = 'failed'" },
			func(arg func(any) string) string {
				// Only pending rows have a status_until: this is the range of devices_by_until,
				// the few rows that ran out since the jobs last settled them, not every pending one.
				return "d.status_until IS NOT NULL AND d.status_until <= " + arg(micros(now))
			},
		}
	default:
		alternatives[0] = func(arg func(any) string) string {
			return statusIs("d", f.EscrowStatus, func() string { return arg(micros(now)) })
		}
	}
	var devices []listedDevice
	for _, alternative := range alternatives {
		args := append([]any{}, matchArgs...)
		arg := func(v any) string { args = append(args, v); return "$" + itoa(len(args)) }
		where := append([]string{}, match...)
		scope := scopeCond(f.Scope, "d", arg)
		where = append(where, scope...)
		where = append(where, retiredWhere(f.Retired, "d"))
		if c := alternative(arg); c != "" {
			where = append(where, c)
		}
		if afterID != "" {
			n1, n2 := arg(afterName), arg(afterID)
			where = append(where, "(d.name > "+n1+" OR (d.name = "+n1+" AND d.id > "+n2+"))")
		}
		query := `SELECT ` + prefixColumns("d.", deviceColumns+", "+storedColumns) + ` FROM devices d WHERE ` + strings.Join(where, " AND ") +
			" ORDER BY d.name, d.id LIMIT " + itoa(n)
		page, err := queryAll(ctx, tx, func(s scanner) (listedDevice, error) {
			d, st, err := scanStored(s)
			return listedDevice{d, st}, err
		}, query, args...)
		if err != nil {
			return nil, err
		}
		devices = append(devices, page...)
	}
	if len(alternatives) > 1 {
		slices.SortFunc(devices, func(a, b listedDevice) int {
			return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.ID, b.ID))
		})
		if len(devices) > n {
			devices = devices[:n]
		}
	}
	return devices, nil
}

// listedDevice is a device row of a listing with its stored status.
type listedDevice struct {
	escrow.Device
	stored storedStatus
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

// retiredWhere is the SQL condition selecting the devices in service (retired false) or the
// retired ones, on the devices table aliased as alias. Retired devices leave the compliance
// views (device list, escrow report, census) unless asked for.
func retiredWhere(retired bool, alias string) string {
	if retired {
		return alias + ".retired_at IS NOT NULL"
	}
	return alias + ".retired_at IS NULL"
}

// scopeWhere turns a scope into SQL conditions on the devices table aliased as alias, with
// their arguments numbered from 1.
func scopeWhere(s escrow.Scope, alias string) ([]string, []any) {
	var args []any
	where := scopeCond(s, alias, func(v any) string { args = append(args, v); return "$" + itoa(len(args)) })
	return where, args
}

// scopeCond is scopeWhere for a query that numbers its own arguments: arg adds one and returns
// its placeholder.
func scopeCond(s escrow.Scope, alias string, arg func(any) string) []string {
	var where []string
	switch {
	case s.All:
	case s.OwnerUPN != "":
		// The one comparison of an owner with a sign-in name: owner_key = canonical(email). A
		// name without a canonical form owns nothing (and never the devices without an owner).
		key := nameKey(s.OwnerUPN)
		if key == "" {
			return []string{"1 = 0"}
		}
		where = []string{alias + ".owner_key = " + arg(key)}
	case len(s.Tags) > 0:
		in := make([]string, len(s.Tags))
		for i, t := range s.Tags {
			in[i] = arg(t)
		}
		where = []string{alias + ".id IN (SELECT device_id FROM device_tags WHERE tag IN (" + strings.Join(in, ", ") + "))"}
	default:
		return []string{"1 = 0"}
	}
	if s.Undisputed {
		where = append(where, alias+".disputed_at IS NULL")
	}
	return where
}

// withStatus loads the volumes of the devices and applies the escrow-status rules at now.
func (db *DB) withStatus(ctx context.Context, q dbtx, devices []escrow.Device) ([]escrow.DeviceDetail, error) {
	if len(devices) == 0 {
		return []escrow.DeviceDetail{}, nil
	}
	settings, err := loadSettings(ctx, q)
	if err != nil {
		return nil, err
	}
	out, _, _, err := computeStatus(ctx, q, devices, db.Now(), settings)
	return out, err
}

// computeStatus loads the volumes of the devices and applies the escrow-status rules at now.
// It also returns what each volume's row holds of its stored status and, per device, the first
// instant at which the result may change by itself (escrow.VolumeState.NextChange).
func computeStatus(ctx context.Context, q dbtx, devices []escrow.Device, now time.Time, s escrow.Settings) ([]escrow.DeviceDetail, map[volKey]volumeStatus, map[string]time.Time, error) {
	out := make([]escrow.DeviceDetail, len(devices))
	recheck := map[string]time.Time{}
	if len(devices) == 0 {
		return out, nil, recheck, nil
	}
	ids := make([]string, len(devices))
	for i, d := range devices {
		ids[i] = d.ID
	}
	states, stored, err := loadVolumeStates(ctx, q, ids, s)
	if err != nil {
		return nil, nil, nil, err
	}
	for i, d := range devices {
		out[i].Device = d
		var present []escrow.VolumeState
		for _, vs := range states[d.ID] {
			if at := vs.NextChange(now, s.EscrowGracePeriod); !at.IsZero() && (recheck[d.ID].IsZero() || at.Before(recheck[d.ID])) {
				recheck[d.ID] = at
			}
			vd := escrow.VolumeDetail{Volume: vs.Volume, Status: escrow.VolumeStatus(vs, now, s.EscrowGracePeriod)}
			out[i].Volumes = append(out[i].Volumes, vd)
			if vs.Volume.Present {
				present = append(present, vs)
			}
		}
		if d.ReportedAt.IsZero() {
			present = states[d.ID]
		}
		out[i].Status = escrow.DeviceStatus(d, present, now, s.EscrowGracePeriod)
	}
	return out, stored, recheck, nil
}

type volKey struct{ device, volume string }

// loadVolumeStates loads what the status rules need for every volume of the devices, under
// the settings s (the rotation timeout), and what each volume's row holds of its stored status.
func loadVolumeStates(ctx context.Context, q dbtx, ids []string, s escrow.Settings) (map[string][]escrow.VolumeState, map[volKey]volumeStatus, error) {
	in := placeholders(1, len(ids))
	rows, err := q.QueryContext(ctx, `SELECT device_id, volume_id, mount_point, volume_type, protection_status, encryption_status,
		lock_status, present, missing_escrow_since, failure, failure_at, escrow_status, status_until FROM volumes WHERE device_id IN (`+in+`)
		ORDER BY device_id, mount_point, volume_id`, anys(ids)...)
	if err != nil {
		return nil, nil, err
	}
	stored := map[volKey]volumeStatus{}
	index := map[volKey]*escrow.VolumeState{}
	var order []volKey
	states := map[volKey]*escrow.VolumeState{}
	for rows.Next() {
		var v escrow.Volume
		var vt, ps, es, ls string
		var missing, failureAt sql.NullInt64
		var st volumeStatus
		if err := rows.Scan(&v.DeviceID, &v.ID, &v.MountPoint, &vt, &ps, &es, &ls, &v.Present, &missing, &v.Failure, &failureAt, &st.status, &st.until); err != nil {
			rows.Close()
			return nil, nil, err
		}
		v.Type, v.ProtectionStatus, v.EncryptionStatus = escrow.VolumeType(vt), escrow.ProtectionStatus(ps), escrow.EncryptionStatus(es)
		v.LockStatus = escrow.LockStatus(ls)
		v.MissingEscrowSince, v.FailureAt = fromMicros(missing), fromMicros(failureAt)
		k := volKey{v.DeviceID, v.ID}
		stored[k] = st
		states[k] = &escrow.VolumeState{Volume: v}
		index[k] = states[k]
		order = append(order, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}

	rows, err = q.QueryContext(ctx, `SELECT device_id, volume_id, key_id, type FROM protectors WHERE device_id IN (`+in+`) ORDER BY device_id, volume_id, key_id`, anys(ids)...)
	if err != nil {
		return nil, nil, err
	}
	for rows.Next() {
		var k volKey
		var p escrow.Protector
		var t string
		if err := rows.Scan(&k.device, &k.volume, &p.KeyID, &t); err != nil {
			rows.Close()
			return nil, nil, err
		}
		p.Type = escrow.ProtectorType(t)
		if st := index[k]; st != nil {
			st.Volume.Protectors = append(st.Volume.Protectors, p)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}

	rows, err = q.QueryContext(ctx, `SELECT DISTINCT device_id, volume_id FROM recovery_keys
		WHERE device_id IN (`+in+`) AND status = 'active' AND verification = 'mismatch'`, anys(ids)...)
	if err != nil {
		return nil, nil, err
	}
	if err := markVolumes(rows, func(d, v string) {
		if st := index[volKey{d, v}]; st != nil {
			st.Mismatch = true
		}
	}); err != nil {
		return nil, nil, err
	}

	rows, err = q.QueryContext(ctx, `SELECT device_id, volume_id, requested_at, delivered_at FROM rotations
		WHERE device_id IN (`+in+`) AND status IN ('requested', 'delivered')`, anys(ids)...)
	if err != nil {
		return nil, nil, err
	}
	for rows.Next() {
		var k volKey
		var at int64
		var delivered sql.NullInt64
		if err := rows.Scan(&k.device, &k.volume, &at, &delivered); err != nil {
			rows.Close()
			return nil, nil, err
		}
		if st := index[k]; st != nil {
			st.RotationOpen, st.RotationSince = true, time.UnixMicro(at).UTC()
			if delivered.Valid {
				st.RotationDeadline = fromMicros(delivered).Add(s.RotationTimeout)
			}
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}

	out := map[string][]escrow.VolumeState{}
	for _, k := range order {
		out[k.device] = append(out[k.device], *states[k])
	}
	return out, stored, nil
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
