package store

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/seal"
)

// SeedDevice is one device of a generated fleet, with what its enrollment, reports and escrows
// would have stored. Only the scale benchmark (cmd/keyward-bench) seeds: a real fleet comes
// through the agent.
type SeedDevice struct {
	Name, OwnerUPN, SerialNumber, OSVersion string
	Tags                                    []string
	EnrolledAt, LastSeenAt                  time.Time
	// ReportedAt is the device's last report; zero: enrolled and never reported (it then has
	// no volumes).
	ReportedAt time.Time
	Volumes    []SeedVolume
}

// SeedVolume is a volume as the device's last report gave it, with its escrowed keys.
type SeedVolume struct {
	ID, MountPoint string
	Type           escrow.VolumeType
	Protection     escrow.ProtectionStatus
	Encryption     escrow.EncryptionStatus
	// Protectors are the volume's protectors other than the recovery passwords of its active
	// keys, which are added for them.
	Protectors []escrow.Protector
	Keys       []SeedKey
	// Failure is an escrow failure the agent reported at FailureAt and that has not since
	// succeeded; "" for none.
	Failure   string
	FailureAt time.Time
	// RotationOpen: a rotation of the volume's recovery password was requested at ReportedAt
	// and has not finished.
	RotationOpen bool
}

// SeedKey is one escrowed recovery password.
type SeedKey struct {
	KeyID, Password string
	CreatedAt       time.Time
	// Superseded keys were replaced at SupersededAt and are kept until RetainUntil; the
	// others are active.
	Superseded   bool
	SupersededAt time.Time
	RetainUntil  time.Time
	Verification escrow.Verification
}

// Seeded is a device Seed stored: its ID and its device token.
type Seeded struct {
	ID    string
	Token escrow.Token
}

// Seed stores the devices in one transaction, as enrollment, reports and escrows would have:
// every key and verification key sealed under its row, each enrollment and escrow recorded in
// the audit chain (by the device, through origin's source and address), missing escrow as the
// reports would have left it. It is for generating a benchmark's fleet: many devices per call
// make seeding a million devices take minutes.
func (db *DB) Seed(ctx context.Context, origin escrow.Origin, devices []SeedDevice) ([]Seeded, error) {
	if db.sealer == nil {
		return nil, escrow.Errorf(escrow.CodeInternal, "seeding needs the master key")
	}
	prepared, err := db.sealSeed(devices)
	if err != nil {
		return nil, err
	}
	out := make([]Seeded, len(devices))
	for i, p := range prepared {
		out[i] = Seeded{ID: p.id, Token: p.token}
	}
	err = db.write(ctx, func(tx *sql.Tx) error {
		if db.dialect == "sqlite" {
			// Seeding inserts into every index at random places (IDs are random); SQLite's
			// default 2 MB page cache would read most pages back from the file for each one (1 GiB
			// here, a ceiling on this connection that only a large fleet fills).
			if _, err := tx.ExecContext(ctx, `PRAGMA cache_size = -1048576`); err != nil {
				return err
			}
		}
		stmts := map[string]*sql.Stmt{}
		exec := func(query string, args ...any) error {
			st := stmts[query]
			if st == nil {
				var err error
				if st, err = tx.PrepareContext(ctx, query); err != nil {
					return err
				}
				stmts[query] = st
			}
			_, err := st.ExecContext(ctx, args...)
			return err
		}
		defer func() {
			for _, st := range stmts {
				st.Close()
			}
		}()
		for i, d := range devices {
			if err := db.seedDevice(ctx, tx, exec, origin, d, prepared[i]); err != nil {
				return fmt.Errorf("device %s: %w", d.Name, err)
			}
		}
		// The stored escrow status, as every write path keeps it (status.go), for the devices
		// of the batch together: the settings read once, the rules applied to many at a time.
		now := db.Now()
		settings, err := loadSettings(ctx, tx)
		if err != nil {
			return err
		}
		for from := 0; from < len(prepared); from += seedStatusChunk {
			var ids []string
			for _, p := range prepared[from:min(from+seedStatusChunk, len(prepared))] {
				if err := refreshMissingEscrow(ctx, tx, p.id, now); err != nil {
					return err
				}
				ids = append(ids, p.id)
			}
			if err := storeStatuses(ctx, tx, ids, now, settings); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// seedSecrets is what Seed works out for a device before its transaction: IDs, token and the
// sealed secrets, one per key in volume order.
type seedSecrets struct {
	id    string
	token escrow.Token
	vk    seal.Sealed
	keys  []seal.Sealed
	rots  []string // rotation IDs, one per volume with RotationOpen
	err   error
}

// sealSeed seals every device's verification key and recovery passwords, on all cores.
func (db *DB) sealSeed(devices []SeedDevice) ([]seedSecrets, error) {
	out := make([]seedSecrets, len(devices))
	// IDs and tokens come from db.Rand, one reader: drawn in order, here.
	for i, d := range devices {
		p := &out[i]
		var err error
		if p.id, err = db.newID(); err != nil {
			return nil, err
		}
		if p.token, err = escrow.NewToken(escrow.TokenDevice, db.Rand); err != nil {
			return nil, err
		}
		for _, v := range d.Volumes {
			if v.RotationOpen {
				id, err := db.newID()
				if err != nil {
					return nil, err
				}
				p.rots = append(p.rots, id)
			}
		}
	}
	vks := make([][]byte, len(devices))
	for i := range vks {
		vks[i] = make([]byte, 32)
		if _, err := io.ReadFull(db.Rand, vks[i]); err != nil {
			return nil, err
		}
	}
	var wg sync.WaitGroup
	next := make(chan int)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := range next {
				p, d := &out[i], devices[i]
				if p.vk, p.err = db.sealer.Seal(vks[i], verificationAAD(p.id)); p.err != nil {
					continue
				}
				for _, v := range d.Volumes {
					for _, k := range v.Keys {
						s, err := db.sealer.Seal([]byte(k.Password), keyAAD(p.id, k.KeyID))
						if err != nil {
							p.err = err
							break
						}
						p.keys = append(p.keys, s)
					}
				}
			}
		})
	}
	for i := range devices {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, p := range out {
		if p.err != nil {
			return nil, escrow.Wrap(escrow.CodeInternal, p.err, "sealing failed")
		}
	}
	return out, nil
}

func (db *DB) seedDevice(ctx context.Context, tx *sql.Tx, exec func(string, ...any) error, o escrow.Origin, d SeedDevice, p seedSecrets) error {
	if err := exec(`INSERT INTO devices (id, name, owner_upn, owner_key, serial_number, os_version,
		token_id, token_hash, verification_key, verification_key_wrap, enrolled_at, last_seen_at, reported_at, name_key)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
		p.id, d.Name, d.OwnerUPN, nameKey(d.OwnerUPN), d.SerialNumber, d.OSVersion,
		p.token.ID, p.token.SecretHash(), p.vk.Ciphertext, p.vk.WrappedKey, micros(d.EnrolledAt), micros(d.LastSeenAt), nullMicros(d.ReportedAt),
		searchKey(d.Name)); err != nil {
		return err
	}
	for _, tag := range d.Tags {
		if err := exec(`INSERT INTO device_tags (device_id, tag) VALUES ($1, $2)`, p.id, tag); err != nil {
			return err
		}
	}
	actor := escrow.Actor{Type: escrow.ActorDevice, ID: p.id, Name: d.Name}
	e := o.Event(escrow.ActionDeviceEnroll, escrow.OutcomeSuccess)
	e.Actor, e.DeviceID, e.Detail = actor, p.id, "seeded fleet"
	if err := db.appendEvent(ctx, tx, e); err != nil {
		return err
	}
	sealed, rots := p.keys, p.rots
	for _, v := range d.Volumes {
		// Missing escrow as refreshMissingEscrow defines it: encrypted, and no active recovery
		// password; since the report that found it so.
		var missing sql.NullInt64
		if (escrow.Volume{ProtectionStatus: v.Protection, EncryptionStatus: v.Encryption}).Encrypted() &&
			!slices.ContainsFunc(v.Keys, func(k SeedKey) bool { return !k.Superseded }) {
			missing = nullMicros(d.ReportedAt)
		}
		if err := exec(`INSERT INTO volumes (device_id, volume_id, mount_point, volume_type, protection_status, encryption_status,
			present, missing_escrow_since, failure, failure_at) VALUES ($1, $2, $3, $4, $5, $6, TRUE, $7, $8, $9)`,
			p.id, v.ID, v.MountPoint, string(v.Type), string(v.Protection), string(v.Encryption), missing, v.Failure, nullMicros(v.FailureAt)); err != nil {
			return err
		}
		protectors := v.Protectors
		for _, k := range v.Keys {
			status, superseded, retain := escrow.KeyActive, sql.NullInt64{}, sql.NullInt64{}
			if k.Superseded {
				status, superseded, retain = escrow.KeySuperseded, nullMicros(k.SupersededAt), nullMicros(k.RetainUntil)
			} else {
				protectors = append(protectors, escrow.Protector{KeyID: k.KeyID, Type: escrow.ProtectorRecoveryPassword})
			}
			verification := k.Verification
			if verification == "" {
				verification = escrow.Unverified
			}
			var verifiedAt sql.NullInt64
			if verification != escrow.Unverified {
				verifiedAt = nullMicros(d.ReportedAt)
			}
			s := sealed[0]
			sealed = sealed[1:]
			if err := exec(`INSERT INTO recovery_keys (device_id, key_id, volume_id, kind, status, verification, verified_at,
				ciphertext, wrapped_key, created_at, superseded_at, retain_until)
				VALUES ($1, $2, $3, 'recoveryPassword', $4, $5, $6, $7, $8, $9, $10, $11)`,
				p.id, k.KeyID, v.ID, string(status), string(verification), verifiedAt, s.Ciphertext, s.WrappedKey,
				micros(k.CreatedAt), superseded, retain); err != nil {
				return err
			}
			e := o.Event(escrow.ActionKeyEscrow, escrow.OutcomeSuccess)
			e.Actor, e.DeviceID, e.KeyID = actor, p.id, k.KeyID
			e.Detail = fmt.Sprintf("%s for volume %s", escrow.KindRecoveryPassword, v.ID)
			if err := db.appendEvent(ctx, tx, e); err != nil {
				return err
			}
		}
		for _, pr := range protectors {
			if err := exec(`INSERT INTO protectors (device_id, volume_id, key_id, type) VALUES ($1, $2, $3, $4)`,
				p.id, v.ID, pr.KeyID, string(pr.Type)); err != nil {
				return err
			}
		}
		if v.RotationOpen {
			if err := exec(`INSERT INTO rotations (id, device_id, volume_id, status, trigger_kind, reason, requested_by, requested_at)
				VALUES ($1, $2, $3, 'requested', $4, 'seeded fleet', 'keyward-bench', $5)`,
				rots[0], p.id, v.ID, escrow.TriggerManual, micros(d.ReportedAt)); err != nil {
				return err
			}
			rots = rots[1:]
		}
	}
	return nil
}

// seedStatusChunk is how many devices' status Seed derives in one go.
const seedStatusChunk = 200
