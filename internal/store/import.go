package store

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/recovery"
	"github.com/keyward/keyward/internal/seal"
)

// errDryRun rolls a dry run's transaction back after it did everything a real import does.
var errDryRun = escrow.Errorf(escrow.CodeInternal, "dry run")

// importVolumePrefix marks the volume an imported key is filed under until its agent escrows
// it on the volume Windows names: sources know BitLocker's volume GUID at best, never the
// \\?\Volume{…}\ name the agent reports.
const importVolumePrefix = "import:"

// Import validates, seals and stores a batch of recovery passwords read from an outside
// source (source names it in each key.import event: "csv keys.csv", "ad ldaps://dc1"), in one
// transaction. Each record is attached to the device in service with its hostname, or to a new
// device record with no agent yet (it stays pending, as a device that never reported). Running
// the same import again changes nothing: a key the device already holds with the same password
// is unchanged, one held with a different password is a conflict and is skipped, and so is an
// invalid record; the results say which, by position, never with the material. With dryRun
// the transaction is rolled back, so the results say what an import would do.
// Errors: CodeUnavailable; nothing of the batch is stored then.
func (db *DB) Import(ctx context.Context, o escrow.Origin, source string, recs []escrow.ImportRecord, dryRun bool) ([]escrow.ImportResult, error) {
	type valid struct {
		i        int
		rec      escrow.ImportRecord
		password string
		owner    string
	}
	results := make([]escrow.ImportResult, len(recs))
	var todo []valid
	for i, r := range recs {
		res := &results[i]
		res.Position, res.Hostname = r.Position, r.Hostname
		v, err := checkImport(r)
		if err != nil {
			res.Outcome, res.Message = escrow.ImportInvalid, safeMessage(err)
			res.KeyID, _ = escrow.ParseKeyID(r.KeyID) // named when it is one
			continue
		}
		res.KeyID, res.Hostname = v.rec.KeyID, v.rec.Hostname
		todo = append(todo, valid{i: i, rec: v.rec, password: v.password, owner: v.owner})
	}
	now := db.Now()
	err := db.write(ctx, func(tx *sql.Tx) error {
		for _, v := range todo {
			res := &results[v.i]
			res.DeviceID, res.NewDevice, res.Outcome, res.Message = "", false, "", ""
			if err := db.importOne(ctx, tx, o, source, v.rec, v.password, v.owner, now, res); err != nil {
				return err
			}
		}
		if dryRun {
			return errDryRun
		}
		return nil
	})
	if err != nil && !(dryRun && errors.Is(err, errDryRun)) {
		return nil, err
	}
	return results, nil
}

// safeMessage is the caller-safe part of a validation error.
func safeMessage(err error) string {
	if e, ok := errors.AsType[*escrow.Error](err); ok {
		return e.Message
	}
	return "not valid"
}

type checkedImport struct {
	rec             escrow.ImportRecord
	password, owner string
}

// checkImport validates a record the way an escrow is validated, and puts its fields in
// canonical form. Errors: CodeInvalid naming the field; never the material.
func checkImport(r escrow.ImportRecord) (checkedImport, error) {
	var c checkedImport
	var err error
	r.Hostname = strings.TrimSpace(r.Hostname)
	if err := escrow.CheckText("hostname", r.Hostname, true, 256); err != nil {
		return c, err
	}
	if r.KeyID, err = escrow.ParseKeyID(r.KeyID); err != nil {
		return c, err
	}
	if r.VolumeType == "" {
		r.VolumeType = escrow.VolumeOperatingSystem
	}
	if r.VolumeID == "" {
		r.VolumeID = r.KeyID
	}
	r.VolumeID = importVolumePrefix + r.VolumeID
	if err := escrow.CheckVolume(r.VolumeID, "", r.VolumeType); err != nil {
		return c, err
	}
	if c.password, err = recovery.ParsePassword(r.Password); err != nil {
		return c, escrow.Errorf(escrow.CodeInvalid, "recoveryPassword: %s", err.Error())
	}
	if r.OwnerUPN != "" {
		en := escrow.Enrollment{Hostname: r.Hostname, OwnerUPN: r.OwnerUPN}
		if err := en.Validate(); err != nil {
			return c, err
		}
		if c.owner, err = en.CanonicalOwner(); err != nil {
			return c, err
		}
	}
	r.Password = ""
	c.rec = r
	return c, nil
}

// importOne stores one valid record inside the import's transaction and fills in its result.
func (db *DB) importOne(ctx context.Context, tx *sql.Tx, o escrow.Origin, source string, r escrow.ImportRecord, password, owner string, now time.Time, res *escrow.ImportResult) error {
	deviceID, err := importDevice(ctx, tx, r.Hostname, r.KeyID)
	if err != nil {
		return err
	}
	if deviceID == "" {
		if deviceID, err = db.createImportedDevice(ctx, tx, r.Hostname, owner, now); err != nil {
			return err
		}
		res.NewDevice = true
	}
	res.DeviceID = deviceID
	aad := keyAAD(deviceID, r.KeyID)
	var status string
	var ct, wk []byte
	err = tx.QueryRowContext(ctx, `SELECT status, ciphertext, wrapped_key FROM recovery_keys WHERE device_id = $1 AND key_id = $2`,
		deviceID, r.KeyID).Scan(&status, &ct, &wk)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return err
	case escrow.KeyStatus(status) == escrow.KeyPurged:
		// Its material was destroyed here after its retention: a stale copy in the source
		// must not bring it back.
		res.Outcome, res.Message = escrow.ImportUnchanged, "purged here after its retention; not brought back"
		return nil
	default:
		held, err := db.sealer.Open(seal.Sealed{Ciphertext: ct, WrappedKey: wk}, aad)
		if err != nil {
			return escrow.Wrap(escrow.CodeInternal, err, "stored key does not open")
		}
		same := subtle.ConstantTimeCompare(held, []byte(password)) == 1
		clear(held)
		if same {
			res.Outcome = escrow.ImportUnchanged
		} else {
			res.Outcome, res.Message = escrow.ImportConflict, "the device holds a different recovery password under this key ID; skipped"
		}
		return nil
	}
	sealed, err := db.sealer.Seal([]byte(password), aad)
	if err != nil {
		return escrow.Wrap(escrow.CodeInternal, err, "sealing failed")
	}
	if err := upsertVolume(ctx, tx, deviceID, r.VolumeID, "", r.VolumeType); err != nil {
		return err
	}
	created := now
	if !r.CreatedAt.IsZero() && r.CreatedAt.Before(now) {
		created = r.CreatedAt.UTC().Truncate(time.Microsecond)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO recovery_keys (device_id, key_id, volume_id, kind, status, ciphertext, wrapped_key, created_at)
		VALUES ($1, $2, $3, 'recoveryPassword', 'active', $4, $5, $6)`,
		deviceID, r.KeyID, r.VolumeID, sealed.Ciphertext, sealed.WrappedKey, micros(created)); err != nil {
		return err
	}
	if err := refreshImportedStatus(ctx, tx, deviceID, now); err != nil {
		return err
	}
	e := o.Event(escrow.ActionKeyImport, escrow.OutcomeSuccess)
	e.DeviceID, e.KeyID = deviceID, r.KeyID
	e.Detail = fmt.Sprintf("recoveryPassword from %s, %s", source, r.Position)
	if res.NewDevice {
		e.Detail += "; new device record " + r.Hostname + " with no agent yet"
	}
	others, err := otherHolders(ctx, tx, deviceID, r.KeyID)
	if err != nil {
		return err
	}
	if len(others) > 0 {
		e.Detail += "; key ID also escrowed by " + describeHolders(others)
	}
	res.Outcome = escrow.ImportAdded
	return db.appendEvent(ctx, tx, e)
}

// refreshImportedStatus is the one place an import brings a device's stored escrow state up to
// date after writing its keys and volumes.
func refreshImportedStatus(ctx context.Context, tx dbtx, deviceID string, now time.Time) error {
	return refreshDeviceStatus(ctx, tx, deviceID, now)
}

// importDevice returns the device in service named hostname (compared without case, as Windows
// compares computer names): if several are, the one already holding the key ID (so a second
// run finds what the first stored), else the most recently seen; "" if there is none.
func importDevice(ctx context.Context, tx dbtx, hostname, keyID string) (string, error) {
	var id string
	err := tx.QueryRowContext(ctx, `SELECT id FROM devices WHERE name_key = $1 AND retired_at IS NULL
		ORDER BY CASE WHEN EXISTS (SELECT 1 FROM recovery_keys k WHERE k.device_id = devices.id AND k.key_id = $2) THEN 0 ELSE 1 END,
		last_seen_at DESC, id LIMIT 1`, searchKey(hostname), keyID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return id, err
}

// createImportedDevice makes the record of a device known only from an import. Its token is
// made and thrown away, so nothing can authenticate as it; its verification key is sealed as
// an enrolled device's is, so every device row looks alike to the rest of the store.
func (db *DB) createImportedDevice(ctx context.Context, tx dbtx, hostname, owner string, now time.Time) (string, error) {
	id, err := db.newID()
	if err != nil {
		return "", err
	}
	tok, err := escrow.NewToken(escrow.TokenDevice, db.Rand)
	if err != nil {
		return "", err
	}
	vk := make([]byte, 32)
	if _, err := io.ReadFull(db.Rand, vk); err != nil {
		return "", err
	}
	sealedVK, err := db.sealer.Seal(vk, verificationAAD(id))
	clear(vk)
	if err != nil {
		return "", escrow.Wrap(escrow.CodeInternal, err, "sealing failed")
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO devices (id, name, owner_upn, owner_key, token_id, token_hash,
		verification_key, verification_key_wrap, enrolled_at, last_seen_at, imported_at, name_key)
		VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8, $8, $8, $9)`,
		id, hostname, owner, tok.ID, tok.SecretHash(), sealedVK.Ciphertext, sealedVK.WrappedKey, micros(now), searchKey(hostname))
	return id, err
}
