package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/keyward/keyward/internal/agent/bitlocker"
	"github.com/keyward/keyward/internal/agent/wire"
)

// escrowable reports whether a protector's material is escrowed: recovery passwords always,
// external keys (the .BEK recovery key) when the system gives them out.
func escrowable(p bitlocker.Protector) bool {
	return p.Type == bitlocker.RecoveryPassword || p.Type == bitlocker.ExternalKey
}

// escrowAll escrows every protector not yet acknowledged. A refusal (400, 409) or unreadable
// material is recorded as an escrowFailed event and not retried before the next periodic
// report; a failure that may pass (the server unreachable, 5xx) ends the pass with an error,
// to be retried with backoff.
func (a *Agent) escrowAll(ctx context.Context, vols []bitlocker.Volume) error {
	for _, v := range vols {
		if v.Locked {
			continue // no material can be read until it is unlocked
		}
		for _, p := range v.Protectors {
			if !escrowable(p) || a.st.acknowledged(p.KeyID) || a.refused[p.KeyID] {
				continue
			}
			err := a.escrowKey(ctx, v, p)
			switch {
			case err == nil:
			case errors.Is(err, bitlocker.ErrNotReadable) && p.Type == bitlocker.ExternalKey:
				// Not every system gives out external keys; nothing to report.
				a.refused[p.KeyID] = true
				a.log.Debug("external key not readable; not escrowed", "volumeId", v.ID, "keyId", p.KeyID)
			case errors.Is(err, errMaterial):
				a.refused[p.KeyID] = true
				a.log.Warn("cannot read a protector's material to escrow it", "volumeId", v.ID, "keyId", p.KeyID, "error", err.Error())
				a.event(wire.EventEscrowFailed, v, p.KeyID, err.Error())
			case refused(err):
				a.refused[p.KeyID] = true
				a.log.Error("the server refused an escrow", "volumeId", v.ID, "keyId", p.KeyID, "error", err.Error())
				a.event(wire.EventEscrowFailed, v, p.KeyID, err.Error())
			default:
				return a.serverError(err)
			}
		}
	}
	return nil
}

// errMaterial marks a failure to read material from BitLocker, as opposed to a failure to send
// it.
var errMaterial = errors.New("reading the key material")

// escrowKey reads one protector's material and puts it to the server; on a 2xx answer the key
// ID is recorded as acknowledged. The material lives only in this call.
func (a *Agent) escrowKey(ctx context.Context, v bitlocker.Volume, p bitlocker.Protector) error {
	req := wire.EscrowRequest{VolumeID: v.ID, MountPoint: v.MountPoint, VolumeType: string(v.Type)}
	switch p.Type {
	case bitlocker.RecoveryPassword:
		pw, err := a.recoveryPassword(ctx, v, p.KeyID)
		if err != nil {
			return err
		}
		req.Kind, req.RecoveryPassword = wire.KindRecoveryPassword, &pw
	case bitlocker.ExternalKey:
		k, err := a.bl.ExternalKey(ctx, v.MountPoint, p.KeyID)
		if err != nil {
			return fmt.Errorf("%w of %s: %w", errMaterial, p.KeyID, err)
		}
		hex := bitlocker.FormatRecoveryKey(k)
		clear(k[:])
		req.Kind, req.RecoveryKey = wire.KindRecoveryKey, &hex
	default:
		return fmt.Errorf("a %s protector has no material to escrow", p.Type)
	}
	if err := a.client.escrow(ctx, p.KeyID, req); err != nil {
		return err
	}
	a.st.acknowledge(p.KeyID)
	if err := a.save(); err != nil {
		return err
	}
	a.changed = true
	a.log.Info("escrowed", "volumeId", v.ID, "mountPoint", v.MountPoint, "keyId", p.KeyID, "kind", req.Kind)
	return nil
}

// recoveryPassword reads a recovery password and checks it. Windows never prints a password
// that fails the checksum; one that does means the agent misread the tool, and escrowing it
// would leave the volume with a password nobody can use.
func (a *Agent) recoveryPassword(ctx context.Context, v bitlocker.Volume, keyID string) (string, error) {
	pw, err := a.bl.RecoveryPassword(ctx, v.MountPoint, keyID)
	if err != nil {
		return "", fmt.Errorf("%w of %s: %w", errMaterial, keyID, err)
	}
	canonical, err := bitlocker.ParsePassword(pw)
	if err != nil {
		return "", fmt.Errorf("%w of %s: %w", errMaterial, keyID, err)
	}
	return canonical, nil
}
