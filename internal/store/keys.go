package store

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/seal"
)

// keyAAD binds sealed key material to its device and key ID: a ciphertext moved to another row
// does not open.
func keyAAD(deviceID, keyID string) []byte { return seal.AAD("key", deviceID, keyID) }

// Escrow stores a key for the calling device. It reports created=true for a new key and false
// when the same material was already held; the key is durable when it returns without error.
// Errors: CodeInvalid, CodeConflict (different material already held for this key ID).
func (db *DB) Escrow(ctx context.Context, o escrow.Origin, deviceID string, req escrow.EscrowRequest) (created bool, err error) {
	if err := escrow.CheckVolume(req.VolumeID, req.MountPoint, req.VolumeType); err != nil {
		return false, err
	}
	if !req.Kind.Valid() {
		return false, escrow.Errorf(escrow.CodeInvalid, "kind: must be recoveryPassword or recoveryKey")
	}
	aad := keyAAD(deviceID, req.KeyID)
	sealed, err := db.sealer.Seal([]byte(req.Material), aad)
	if err != nil {
		return false, escrow.Wrap(escrow.CodeInternal, err, "sealing failed")
	}
	now := db.Now()
	var conflict bool
	err = db.write(ctx, func(tx *sql.Tx) error {
		created, conflict = false, false
		var kind, status, verification string
		var ct, wk []byte
		err := tx.QueryRowContext(ctx, `SELECT kind, status, verification, ciphertext, wrapped_key FROM recovery_keys WHERE device_id = $1 AND key_id = $2`,
			deviceID, req.KeyID).Scan(&kind, &status, &verification, &ct, &wk)
		e := o.Event(escrow.ActionKeyEscrow, escrow.OutcomeSuccess)
		e.DeviceID, e.KeyID = deviceID, req.KeyID
		e.Detail = fmt.Sprintf("%s for volume %s", req.Kind, req.VolumeID)
		store := ""
		switch {
		case errors.Is(err, sql.ErrNoRows):
			store = "insert"
		case err != nil:
			return err
		case escrow.KeyStatus(status) == escrow.KeyPurged:
			// The material was destroyed after the protector disappeared; the device says it
			// holds the key again, so keep it again rather than leave the volume unrecoverable.
			store = "replace"
		default:
			held, err := db.sealer.Open(seal.Sealed{Ciphertext: ct, WrappedKey: wk}, aad)
			if err != nil {
				return escrow.Wrap(escrow.CodeInternal, err, "stored key does not open")
			}
			same := kind == string(req.Kind) && subtle.ConstantTimeCompare(held, []byte(req.Material)) == 1
			clear(held)
			switch {
			case same:
				// The same material again: an agent retrying after a lost answer. The escrow has
				// succeeded, so an escrow failure it reported meanwhile is over.
				return db.escrowSucceeded(ctx, tx, deviceID, req.VolumeID, now)
			case verification == string(escrow.Mismatch) && status == string(escrow.KeyActive):
				// The agent proved the held password is not the one on the volume; this is the
				// re-escrow it was asked for, so the device's material replaces ours.
				store = "replace"
				e.Reason = "re-escrow after a verification mismatch"
			default:
				// Refused: nothing about the device changes, only the attempt is recorded.
				conflict = true
				e.Outcome = escrow.OutcomeDenied
				e.Detail = "different material already escrowed for this key ID"
				return db.appendEvent(ctx, tx, e)
			}
		}
		if err := upsertVolume(ctx, tx, deviceID, req.VolumeID, req.MountPoint, req.VolumeType); err != nil {
			return err
		}
		others, err := otherHolders(ctx, tx, deviceID, req.KeyID)
		if err != nil {
			return err
		}
		if len(others) > 0 {
			e.Detail += "; key ID also escrowed by " + describeHolders(others)
		}
		if store == "insert" {
			if err := db.takeOverImported(ctx, tx, deviceID, req.KeyID, []byte(req.Material), now); err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, `INSERT INTO recovery_keys (device_id, key_id, volume_id, kind, status, ciphertext, wrapped_key, created_at)
				VALUES ($1, $2, $3, $4, 'active', $5, $6, $7)`,
				deviceID, req.KeyID, req.VolumeID, string(req.Kind), sealed.Ciphertext, sealed.WrappedKey, micros(now))
		} else {
			_, err = tx.ExecContext(ctx, `UPDATE recovery_keys SET kind = $3, volume_id = $4, status = 'active', verification = 'unverified',
				verified_at = NULL, ciphertext = $5, wrapped_key = $6, superseded_at = NULL, retain_until = NULL
				WHERE device_id = $1 AND key_id = $2`,
				deviceID, req.KeyID, string(req.Kind), req.VolumeID, sealed.Ciphertext, sealed.WrappedKey)
		}
		if err != nil {
			return err
		}
		created = true
		if err := db.escrowSucceeded(ctx, tx, deviceID, req.VolumeID, now); err != nil {
			return err
		}
		return db.appendEvent(ctx, tx, e)
	})
	if err != nil {
		return false, err
	}
	if conflict {
		return false, escrow.Errorf(escrow.CodeConflict, "keyId: different material is already escrowed for this key ID")
	}
	return created, nil
}

// escrowSucceeded records what a successful escrow means for the volume: a failure reported
// for it is over, it may no longer be missing escrow, and the device's status follows.
func (db *DB) escrowSucceeded(ctx context.Context, tx dbtx, deviceID, volumeID string, now time.Time) error {
	if _, err := tx.ExecContext(ctx, `UPDATE volumes SET failure = '', failure_at = NULL WHERE device_id = $1 AND volume_id = $2`, deviceID, volumeID); err != nil {
		return err
	}
	if err := refreshDeviceStatus(ctx, tx, deviceID, now); err != nil {
		return err
	}
	return touchDevice(ctx, tx, deviceID, now)
}

func upsertVolume(ctx context.Context, tx dbtx, deviceID, volumeID, mountPoint string, vt escrow.VolumeType) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO volumes (device_id, volume_id, mount_point, volume_type) VALUES ($1, $2, $3, $4)
		ON CONFLICT (device_id, volume_id) DO UPDATE SET mount_point = excluded.mount_point, volume_type = excluded.volume_type`,
		deviceID, volumeID, mountPoint, string(vt))
	return err
}

// touchDevice records that the device was seen. Every agent write calls it in its transaction,
// which it fails for a device retired since the request was authenticated: a retired device
// changes nothing, and its token answers like an unknown one.
func touchDevice(ctx context.Context, tx dbtx, deviceID string, now time.Time) error {
	res, err := tx.ExecContext(ctx, `UPDATE devices SET last_seen_at = $2 WHERE id = $1 AND retired_at IS NULL`, deviceID, micros(now))
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err == nil && n == 0 {
		err = errBadToken
	}
	return err
}

// refreshMissingEscrow keeps volumes.missing_escrow_since true to its definition: when the
// volume was first seen with BitLocker on (the rule of escrow.Volume.Encrypted) and no active
// escrowed recovery password. Every change to volumes or keys calls it in the same transaction.
func refreshMissingEscrow(ctx context.Context, tx dbtx, deviceID string, now time.Time) error {
	_, err := tx.ExecContext(ctx, `UPDATE volumes SET missing_escrow_since = CASE
		WHEN (protection_status = 'on' OR encryption_status NOT IN ('', 'fullyDecrypted'))
		 AND NOT EXISTS (SELECT 1 FROM recovery_keys k WHERE k.device_id = volumes.device_id AND k.volume_id = volumes.volume_id
		                 AND k.kind = 'recoveryPassword' AND k.status = 'active')
		THEN COALESCE(missing_escrow_since, $2) ELSE NULL END
		WHERE device_id = $1`, deviceID, micros(now))
	return err
}

const keyColumns = `k.id, k.key_id, k.device_id, d.name, k.volume_id, v.mount_point, v.volume_type, k.kind, k.status,
	k.verification, k.verified_at, k.created_at, k.superseded_at, k.retain_until, k.last_accessed_at, k.access_count,
	d.serial_number, d.enrolled_at, d.last_seen_at, d.disputed_at`

const keyFrom = ` FROM recovery_keys k JOIN devices d ON d.id = k.device_id
	JOIN volumes v ON v.device_id = k.device_id AND v.volume_id = k.volume_id`

// scanKey scans keyColumns, then any extra columns into extra.
func scanKey(s scanner, extra ...any) (int64, escrow.RecoveryKey, error) {
	var k escrow.RecoveryKey
	var rowID, created, enrolled, seen int64
	var vt, kind, status, verification string
	var verified, superseded, retain, accessed, disputed sql.NullInt64
	dest := append([]any{&rowID, &k.KeyID, &k.DeviceID, &k.DeviceName, &k.VolumeID, &k.MountPoint, &vt, &kind, &status,
		&verification, &verified, &created, &superseded, &retain, &accessed, &k.AccessCount,
		&k.DeviceSerial, &enrolled, &seen, &disputed}, extra...)
	err := s.Scan(dest...)
	k.DeviceEnrolledAt, k.DeviceLastSeenAt, k.DeviceDisputed = time.UnixMicro(enrolled).UTC(), time.UnixMicro(seen).UTC(), disputed.Valid
	k.VolumeType, k.Kind, k.Status, k.Verification = escrow.VolumeType(vt), escrow.KeyKind(kind), escrow.KeyStatus(status), escrow.Verification(verification)
	k.CreatedAt = time.UnixMicro(created).UTC()
	k.VerifiedAt, k.SupersededAt, k.RetainUntil, k.LastAccessedAt = fromMicros(verified), fromMicros(superseded), fromMicros(retain), fromMicros(accessed)
	return rowID, k, err
}

// ListKeys returns a page of key metadata (never material) within the principal's scope, and
// records the listing in the audit trail: no listing is answered unless its event committed.
func (db *DB) ListKeys(ctx context.Context, o escrow.Origin, f escrow.KeyFilter) ([]escrow.RecoveryKey, string, error) {
	if f.Limit <= 0 || f.Limit > 1000 {
		f.Limit = defaultLimit
	}
	where, args := scopeWhere(f.Scope, "d")
	arg := func(v any) string { args = append(args, v); return "$" + itoa(len(args)) }
	if f.DeviceID != "" {
		where = append(where, "k.device_id = "+arg(f.DeviceID))
	}
	if f.KeyIDPrefix != "" {
		// A range instead of LIKE: it uses the index, and key IDs hold only [0-9A-F-], all of
		// which sort below '~'.
		where = append(where, "k.key_id >= "+arg(f.KeyIDPrefix)+" AND k.key_id < "+arg(f.KeyIDPrefix+"~"))
	}
	if f.VolumeType != "" {
		where = append(where, "v.volume_type = "+arg(string(f.VolumeType)))
	}
	if f.Status != "" {
		where = append(where, "k.status = "+arg(string(f.Status)))
	}
	if f.EscrowStatus != "" {
		// The device's stored status at the time of the listing (status.go).
		where = append(where, statusIs("d", f.EscrowStatus, func() string { return arg(micros(db.Now())) }))
	}
	var after int64
	if f.Cursor != "" {
		parts, err := decodeCursor(f.Cursor, 1)
		if err != nil {
			return nil, "", err
		}
		if after, err = strconv.ParseInt(parts[0], 10, 64); err != nil {
			return nil, "", errBadCursor
		}
	}
	where = append(where, "k.id > "+arg(after))
	query := `SELECT ` + keyColumns + keyFrom + " WHERE " + strings.Join(where, " AND ") + " ORDER BY k.id LIMIT " + itoa(f.Limit+1)
	var keys []escrow.RecoveryKey
	var next string
	err := db.read(ctx, func(tx *sql.Tx) error {
		page, ids, err := queryKeys(ctx, tx, query, args)
		if err != nil {
			return err
		}
		if len(page) > f.Limit {
			page, ids = page[:f.Limit], ids[:f.Limit]
			next = encodeCursor(itoa64(ids[len(ids)-1]))
		}
		if err := markShared(ctx, tx, page, f.Scope); err != nil {
			return err
		}
		keys = page
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	e := o.Event(escrow.ActionKeyList, escrow.OutcomeSuccess)
	e.DeviceID, e.Detail = f.DeviceID, describeKeyFilter(f, len(keys))
	if len(f.KeyIDPrefix) == 36 {
		e.KeyID = f.KeyIDPrefix
	}
	if err := db.Record(ctx, e); err != nil {
		return nil, "", err
	}
	return keys, next, nil
}

func queryKeys(ctx context.Context, tx dbtx, query string, args []any) ([]escrow.RecoveryKey, []int64, error) {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var keys []escrow.RecoveryKey
	var ids []int64
	for rows.Next() {
		id, k, err := scanKey(rows)
		if err != nil {
			return nil, nil, err
		}
		keys, ids = append(keys, k), append(ids, id)
	}
	return keys, ids, rows.Err()
}

func describeKeyFilter(f escrow.KeyFilter, n int) string {
	parts := []string{fmt.Sprintf("%d keys", n)}
	if f.KeyIDPrefix != "" {
		parts = append(parts, "keyId "+f.KeyIDPrefix)
	}
	if f.VolumeType != "" {
		parts = append(parts, "volumeType "+string(f.VolumeType))
	}
	if f.Status != "" {
		parts = append(parts, "status "+string(f.Status))
	}
	if f.EscrowStatus != "" {
		parts = append(parts, "escrowStatus "+string(f.EscrowStatus))
	}
	return strings.Join(parts, ", ")
}

// Disclose returns the material of the device's active keys and of superseded keys still
// retained, if allowed(device) says the principal may see them. Each key disclosed gets its
// own key.read event in the same transaction as the disclosure: if the audit write fails,
// nothing is returned (fail closed). A denied attempt is recorded too.
//
// The ticket rules of the settings apply to a (a refusal is CodeInvalid, recorded as nothing:
// no read took place). Where the settings make a's view wait for a second person
// (escrow.Settings.NeedsApproval), the view needs the requester's approved request for the
// device: it is used up by this disclosure, whose key.read events name it; without one, the
// answer is a Disclosure with Pending set and no keys (a new request with its key.request
// event, or the requester's pending one).
// Errors: CodeNotFound, CodeForbidden, CodeInvalid, CodeUnavailable.
func (db *DB) Disclose(ctx context.Context, o escrow.Origin, deviceID string, a escrow.Access, allowed func(escrow.Device, escrow.Settings) bool) (escrow.Disclosure, error) {
	var out escrow.Disclosure
	var denied error
	now := db.Now()
	err := db.write(ctx, func(tx *sql.Tx) error {
		out, denied = escrow.Disclosure{}, nil
		e := o.Event(escrow.ActionKeyRead, escrow.OutcomeSuccess)
		e.DeviceID, e.Reason, e.Ticket = deviceID, a.Reason, strings.TrimSpace(a.Ticket)
		d, settings, refused, err := db.admit(ctx, tx, e, a, allowed, "view this device's keys")
		if denied = refused; denied != nil || err != nil {
			return err
		}
		if settings.NeedsApproval(a) {
			approved, pending, err := db.approvalFor(ctx, tx, o, d, a, settings, now)
			if err != nil || pending != nil {
				out.Pending = pending
				return err
			}
			e.Detail = "request=" + approved
		}
		rows, err := tx.QueryContext(ctx, `SELECT `+keyColumns+`, k.ciphertext, k.wrapped_key`+keyFrom+`
			WHERE k.device_id = $1 AND k.ciphertext IS NOT NULL AND (k.status = 'active' OR (k.status = 'superseded' AND k.retain_until > $2))
			ORDER BY k.id`, deviceID, micros(now))
		if err != nil {
			return err
		}
		for rows.Next() {
			var dk escrow.DisclosedKey
			var s seal.Sealed
			if _, dk.RecoveryKey, err = scanKey(rows, &s.Ciphertext, &s.WrappedKey); err != nil {
				rows.Close()
				return err
			}
			material, err := db.sealer.Open(s, keyAAD(deviceID, dk.KeyID))
			if err != nil {
				rows.Close()
				return escrow.Wrap(escrow.CodeInternal, err, "stored key "+dk.KeyID+" does not open")
			}
			dk.Material = string(material)
			clear(material)
			out.Keys = append(out.Keys, dk)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(out.Keys) == 0 {
			e.Detail = joinDetail(e.Detail, "no keys held")
			if err := db.appendEvent(ctx, tx, e); err != nil {
				return err
			}
		}
		for i := range out.Keys {
			k := &out.Keys[i]
			if _, err := tx.ExecContext(ctx, `UPDATE recovery_keys SET access_count = access_count + 1, last_accessed_at = $3
				WHERE device_id = $1 AND key_id = $2`, deviceID, k.KeyID, micros(now)); err != nil {
				return err
			}
			k.AccessCount++
			k.LastAccessedAt = now.UTC()
			ke := e
			ke.KeyID = k.KeyID
			if err := db.appendEvent(ctx, tx, ke); err != nil {
				return err
			}
			if settings.AutoRotateOnDisclosure && k.Status == escrow.KeyActive && k.Kind == escrow.KindRecoveryPassword {
				if _, _, err := db.requestRotation(ctx, tx, systemOrigin(), deviceID, k.VolumeID, k.KeyID, escrow.TriggerDisclosure, escrow.Access{Reason: "key disclosed"}, now); err != nil {
					return err
				}
			}
		}
		details, err := db.withStatus(ctx, tx, []escrow.Device{d})
		if err != nil {
			return err
		}
		out.Device = details[0]
		// The last event appended in this transaction is the head: its seq is what a
		// disclosure that waits for delivery of its key.read events waits for.
		out.AuditSeq, err = db.headSeq(ctx, tx)
		return err
	})
	if err != nil {
		for i := range out.Keys {
			out.Keys[i].Material = ""
		}
		return escrow.Disclosure{}, err
	}
	if denied != nil {
		return escrow.Disclosure{}, denied
	}
	return out, nil
}

func itoa64(n int64) string { return strconv.FormatInt(n, 10) }

// joinDetail adds a part to an event's detail.
func joinDetail(detail, part string) string {
	if detail == "" {
		return part
	}
	return detail + "; " + part
}

// Key IDs are unique per device only: a BitLocker To Go drive keeps its protector GUID when it
// moves between computers, and a planted device can escrow junk under someone's real key ID.
// So wherever a key ID leads to a device, the other devices holding it are named.

// otherHolders returns the devices other than deviceID that escrowed keyID, oldest first.
func otherHolders(ctx context.Context, tx dbtx, deviceID, keyID string) ([]escrow.Device, error) {
	return queryAll(ctx, tx, scanDeviceOnly, `SELECT `+prefixColumns("d.", deviceColumns)+` FROM devices d
		WHERE d.id IN (SELECT device_id FROM recovery_keys WHERE key_id = $1 AND device_id <> $2) ORDER BY d.enrolled_at, d.id`, keyID, deviceID)
}

// describeHolders names devices for an audit event, at most five of them.
func describeHolders(ds []escrow.Device) string {
	var parts []string
	for i, d := range ds {
		if i == 5 {
			parts = append(parts, "and "+itoa(len(ds)-5)+" more")
			break
		}
		parts = append(parts, "device "+d.Name+" ("+d.ID+", serial "+d.SerialNumber+")")
	}
	return strings.Join(parts, ", ")
}

// markShared fills in, for each key, the other devices that hold its key ID: those in scope by
// name, the others as a count, for staff only. A person's own scope never learns of devices
// outside it: to self-service, someone else's key ID is one that does not exist.
func markShared(ctx context.Context, tx dbtx, keys []escrow.RecoveryKey, scope escrow.Scope) error {
	if len(keys) == 0 {
		return nil
	}
	seen := map[string]bool{}
	var ids []string
	for _, k := range keys {
		if !seen[k.KeyID] {
			seen[k.KeyID] = true
			ids = append(ids, k.KeyID)
		}
	}
	type holder struct{ keyID, deviceID string }
	holders, err := queryAll(ctx, tx, func(s scanner) (holder, error) {
		var h holder
		return h, s.Scan(&h.keyID, &h.deviceID)
	}, `SELECT k.key_id, k.device_id FROM recovery_keys k WHERE k.key_id IN (`+placeholders(1, len(ids))+`)
		AND EXISTS (SELECT 1 FROM recovery_keys o WHERE o.key_id = k.key_id AND o.device_id <> k.device_id) ORDER BY k.id`, anys(ids)...)
	if err != nil || len(holders) == 0 {
		return err // no key ID of the page is shared: the usual answer, from the index alone
	}
	byKey := map[string][]string{}
	devSeen := map[string]bool{}
	var devIDs []string
	for _, h := range holders {
		byKey[h.keyID] = append(byKey[h.keyID], h.deviceID)
		if !devSeen[h.deviceID] {
			devSeen[h.deviceID] = true
			devIDs = append(devIDs, h.deviceID)
		}
	}
	devices, err := queryAll(ctx, tx, scanDeviceOnly, `SELECT `+prefixColumns("d.", deviceColumns)+` FROM devices d WHERE d.id IN (`+placeholders(1, len(devIDs))+`)`, anys(devIDs)...)
	if err != nil {
		return err
	}
	byID := map[string]escrow.Device{}
	for _, d := range devices {
		byID[d.ID] = d
	}
	for i := range keys {
		k := &keys[i]
		for _, id := range byKey[k.KeyID] {
			if id == k.DeviceID {
				continue
			}
			d := byID[id]
			switch {
			case scope.Allows(d):
				k.SharedWith = append(k.SharedWith, escrow.DeviceRef{ID: d.ID, Name: d.Name, Disputed: d.Disputed()})
			case scope.OwnerUPN == "":
				k.SharedOutside++
			}
		}
	}
	return nil
}
