package store

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// JobResult says what one run of the background jobs did.
type JobResult struct {
	Purged       int // keys whose material was destroyed
	TimedOut     int // delivered rotations failed for taking too long
	AgeRotations int // rotations requested because a key reached the maximum age
	Settled      int // devices whose pending status ran out, stored as failed
}

// RunJobs runs every background job once: purge of keys past retention, rotation timeouts,
// rotations of keys past the maximum age, and settling statuses that ran out (status.go). Each item is its own transaction guarded by the
// condition that selected it, so two servers running jobs at once act on each item once.
func (db *DB) RunJobs(ctx context.Context) (JobResult, error) {
	var res JobResult
	var settings escrow.Settings
	if err := db.read(ctx, func(tx *sql.Tx) error {
		var err error
		settings, err = loadSettings(ctx, tx)
		return err
	}); err != nil {
		return res, err
	}
	var err error
	if res.Purged, err = db.purgeExpired(ctx); err != nil {
		return res, err
	}
	if res.TimedOut, err = db.timeOutRotations(ctx, settings); err != nil {
		return res, err
	}
	if settings.MaxKeyAge > 0 {
		if res.AgeRotations, err = db.rotateOldKeys(ctx, settings); err != nil {
			return res, err
		}
	}
	if res.Settled, err = db.settleStatuses(ctx); err != nil {
		return res, err
	}
	// Also every hour: a fleet grows by enrollments and escrows, none of them a large change,
	// and the writer keeps its statements as planned with the statistics of the last refresh.
	if res.Purged+res.TimedOut+res.AgeRotations+res.Settled >= largeChange ||
		db.Now().Sub(time.UnixMicro(db.optimizedAt.Load())) >= optimizeEvery {
		db.optimize(ctx)
	}
	return res, nil
}

// optimizeEvery is how often the jobs refresh the query planner's statistics at the least.
const optimizeEvery = time.Hour

type keyRef struct{ deviceID, keyID string }

func (db *DB) candidates(ctx context.Context, query string, args ...any) ([]keyRef, error) {
	var out []keyRef
	err := db.read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var r keyRef
			if err := rows.Scan(&r.deviceID, &r.keyID); err != nil {
				return err
			}
			out = append(out, r)
		}
		return rows.Err()
	})
	return out, err
}

// purgeExpired destroys the material of superseded keys past their retention: the ciphertext
// and the wrapped data key are removed from the row (and, with secure_delete, from the file);
// the metadata and the audit history stay.
func (db *DB) purgeExpired(ctx context.Context) (int, error) {
	now := db.Now()
	refs, err := db.candidates(ctx, `SELECT device_id, key_id FROM recovery_keys
		WHERE status = 'superseded' AND retain_until <= $1 ORDER BY retain_until LIMIT 1000`, micros(now))
	if err != nil {
		return 0, err
	}
	purged := 0
	for _, r := range refs {
		err := db.write(ctx, func(tx *sql.Tx) error {
			res, err := tx.ExecContext(ctx, `UPDATE recovery_keys SET status = 'purged', ciphertext = NULL, wrapped_key = NULL
				WHERE device_id = $1 AND key_id = $2 AND status = 'superseded' AND retain_until <= $3`, r.deviceID, r.keyID, micros(now))
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil || n == 0 {
				return err // someone else purged it, or it came back
			}
			purged++
			e := systemOrigin().Event(escrow.ActionKeyPurge, escrow.OutcomeSuccess)
			e.DeviceID, e.KeyID, e.Detail = r.deviceID, r.keyID, "retention ended; key material destroyed"
			if err := db.appendEvent(ctx, tx, e); err != nil {
				return err
			}
			// Only active keys count for the status today; a purge still keeps it current, so
			// that no change to keys can leave it behind.
			return refreshDeviceStatus(ctx, tx, r.deviceID, now)
		})
		if err != nil {
			return purged, err
		}
	}
	if purged > 0 {
		// Old page images can linger in the write-ahead log until a checkpoint overwrites them.
		// Best effort: a reader holding an old snapshot makes this a partial checkpoint, and the
		// next purge or the automatic checkpoint finishes the job.
		_, _ = db.rw.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
	}
	return purged, nil
}

// timeOutRotations fails rotations delivered longer ago than the rotation timeout. A rotation
// still requested is not failed: the device is offline, and it will fetch it when it is back.
func (db *DB) timeOutRotations(ctx context.Context, s escrow.Settings) (int, error) {
	now := db.Now()
	var ids []string
	err := db.read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT id FROM rotations WHERE status = 'delivered' AND delivered_at <= $1`, micros(now.Add(-s.RotationTimeout)))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return rows.Err()
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		err := db.write(ctx, func(tx *sql.Tx) error {
			r, err := scanRotation(tx.QueryRowContext(ctx, `SELECT `+rotationColumns+` FROM rotations WHERE id = $1 AND status = 'delivered' AND delivered_at <= $2`,
				id, micros(now.Add(-s.RotationTimeout))))
			if errors.Is(err, sql.ErrNoRows) {
				return nil
			}
			if err != nil {
				return err
			}
			n++
			return db.failRotation(ctx, tx, systemOrigin(), r, "not completed within the rotation timeout of "+escrow.FormatDuration(s.RotationTimeout), now)
		})
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// rotateOldKeys requests rotation of active recovery passwords older than the maximum key age
// on encrypted volumes.
func (db *DB) rotateOldKeys(ctx context.Context, s escrow.Settings) (int, error) {
	now := db.Now()
	refs, err := db.candidates(ctx, `SELECT k.device_id, k.key_id FROM recovery_keys k
		JOIN volumes v ON v.device_id = k.device_id AND v.volume_id = k.volume_id
		WHERE k.status = 'active' AND k.kind = 'recoveryPassword' AND k.created_at <= $1 AND v.present
		AND NOT EXISTS (SELECT 1 FROM rotations r WHERE r.device_id = k.device_id AND r.volume_id = k.volume_id AND r.status IN ('requested', 'delivered'))
		LIMIT 1000`, micros(now.Add(-s.MaxKeyAge)))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range refs {
		err := db.write(ctx, func(tx *sql.Tx) error {
			var volumeID string
			err := tx.QueryRowContext(ctx, `SELECT volume_id FROM recovery_keys WHERE device_id = $1 AND key_id = $2 AND status = 'active'`,
				r.deviceID, r.keyID).Scan(&volumeID)
			if errors.Is(err, sql.ErrNoRows) {
				return nil
			}
			if err != nil {
				return err
			}
			_, created, err := db.requestRotation(ctx, tx, systemOrigin(), r.deviceID, volumeID, r.keyID, escrow.TriggerMaxKeyAge,
				escrow.Access{Reason: "key older than the maximum key age of " + escrow.FormatDuration(s.MaxKeyAge)}, now)
			if created {
				n++
			}
			return err
		})
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// RunJobsEvery runs the jobs now and then every interval until ctx is done, logging failures
// through report. SPEC §4 asks for at least once a minute.
func (db *DB) RunJobsEvery(ctx context.Context, interval time.Duration, report func(JobResult, error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		res, err := db.RunJobs(ctx)
		if ctx.Err() != nil {
			return
		}
		report(res, err)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
