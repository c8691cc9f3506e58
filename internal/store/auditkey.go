package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/seal"
)

// The audit chain's key lives in the check value (seal_check), sealed by the master key: the
// database alone can neither read it nor make another, master-key rotation re-wraps it with the
// check value, and backups and migrate-store carry it along. The check value's payload is
//
//	key (32 bytes) || switch-over seq (8 bytes, big-endian) || switch-over hash (32 bytes)
//
// The switch-over point sits under the same seal as the key, so nobody without the master key
// can move it to pass rewritten events off as ones written before the chain was keyed. Keying
// replaces the first version of the check value, which carries no key, with this one; a
// database whose check value is of the second version never verifies as a plain chain again.
const auditPayloadSize = audit.KeySize + 8 + 32

func encodeAuditKey(k audit.Key) []byte {
	b := make([]byte, 0, auditPayloadSize)
	b = append(b, k.MAC...)
	b = binary.BigEndian.AppendUint64(b, uint64(k.SwitchSeq))
	return append(b, k.SwitchHash...)
}

func decodeAuditKey(p []byte) (audit.Key, error) {
	if len(p) != auditPayloadSize {
		return audit.Key{}, errors.New("the check value's audit key has the wrong length")
	}
	seq := binary.BigEndian.Uint64(p[audit.KeySize:])
	return audit.Key{
		MAC:        bytes.Clone(p[:audit.KeySize]),
		SwitchSeq:  int64(seq),
		SwitchHash: bytes.Clone(p[audit.KeySize+8:]),
	}, nil
}

// auditKeyIn reads the audit key from the check value inside tx. It returns nil, with no
// error, for a database whose chain is not keyed yet (a check value of the first version).
func auditKeyIn(ctx context.Context, tx dbtx, sealer *seal.Sealer) (*audit.Key, error) {
	var c seal.Sealed
	err := tx.QueryRowContext(ctx, `SELECT ciphertext, wrapped_key FROM seal_check WHERE id = 1`).Scan(&c.Ciphertext, &c.WrappedKey)
	if err != nil {
		return nil, err
	}
	payload, err := sealer.OpenCheck(c)
	if err != nil || payload == nil {
		return nil, err
	}
	defer clear(payload)
	k, err := decodeAuditKey(payload)
	if err != nil {
		return nil, err
	}
	return &k, nil
}

// ensureAuditKey returns the database's audit key, keying the chain inside tx first if it is
// not keyed yet: on a new database, and on the first start with the master key after an
// upgrade, where the events so far stay plain SHA-256 up to the head, the switch-over point.
func ensureAuditKey(ctx context.Context, tx dbtx, sealer *seal.Sealer, rnd io.Reader) (*audit.Key, error) {
	k, err := auditKeyIn(ctx, tx, sealer)
	if k != nil || (err != nil && !errors.Is(err, sql.ErrNoRows)) {
		return k, err
	}
	exists := err == nil
	if !exists {
		// A check value is written at the first start with the master key, before any key
		// material: a database with sealed values and none has lost it, and making a new
		// one would also key its chain anew from wherever its head now is.
		var n int64
		if err := tx.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM devices) + (SELECT COUNT(*) FROM recovery_keys)`).Scan(&n); err != nil {
			return nil, err
		}
		if n > 0 {
			return nil, escrow.Errorf(escrow.CodeInternal, "the database holds sealed keys but no master key check value: it was damaged or tampered with; restore a backup")
		}
	}
	var head audit.Head
	if err := tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit_head WHERE id = 1`).Scan(&head.Seq, &head.Hash); err != nil {
		return nil, err
	}
	nk := audit.Key{MAC: make([]byte, audit.KeySize), SwitchSeq: head.Seq, SwitchHash: head.Hash}
	if _, err := io.ReadFull(rnd, nk.MAC); err != nil {
		return nil, fmt.Errorf("generating the audit key: %w", err)
	}
	if len(nk.SwitchHash) != 32 {
		return nil, escrow.Errorf(escrow.CodeInternal, "the audit chain head holds a hash of %d bytes", len(nk.SwitchHash))
	}
	payload := encodeAuditKey(nk)
	c, err := sealer.NewCheckWith(payload)
	clear(payload)
	if err != nil {
		return nil, err
	}
	q := `INSERT INTO seal_check (id, ciphertext, wrapped_key) VALUES (1, $1, $2)`
	if exists {
		q = `UPDATE seal_check SET ciphertext = $1, wrapped_key = $2 WHERE id = 1`
	}
	if _, err := tx.ExecContext(ctx, q, c.Ciphertext, c.WrappedKey); err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE audit_head SET mac = $1 WHERE id = 1`, audit.HeadMAC(nk.MAC, head.Seq, head.Hash)); err != nil {
		return nil, err
	}
	return &nk, nil
}

// errNoAuditKey is what appending says on a store opened without the master key.
var errNoAuditKey = escrow.Errorf(escrow.CodeInternal, "the audit trail is keyed by the master key, which this store was opened without")

// errHeadForged is what appending says when the head does not authenticate: extending it
// would give a chain cut off or rewritten by someone without the key a head that verifies.
var errHeadForged = escrow.Errorf(escrow.CodeInternal, "the audit chain head does not authenticate, so nothing more is recorded; run keyward audit verify")
