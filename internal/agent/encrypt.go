package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/keyward/keyward/internal/agent/bitlocker"
	"github.com/keyward/keyward/internal/agent/wire"
)

// encryptOSVolume turns BitLocker on for a fully decrypted operating-system volume, escrow
// first (SPEC §10): it adds a recovery-password protector if the volume has none, escrows it,
// and starts encryption only once the server acknowledged a recovery password of the volume.
// Nothing needs recording between the steps: after a crash the next cycle sees the protector,
// escrows it if needed, and goes on.
func (a *Agent) encryptOSVolume(ctx context.Context, vols []bitlocker.Volume) error {
	i := slices.IndexFunc(vols, func(v bitlocker.Volume) bool { return v.Type == bitlocker.OperatingSystem })
	if i < 0 {
		return nil
	}
	v := vols[i]
	if v.Locked || v.Encrypted() || v.EncryptionStatus != bitlocker.FullyDecrypted || a.encryptionHeld {
		return nil
	}
	rps := v.OfType(bitlocker.RecoveryPassword)
	if len(rps) == 0 {
		pw, err := bitlocker.GeneratePassword(a.cfg.Rand)
		if err != nil {
			return err
		}
		id, err := a.bl.AddRecoveryPassword(ctx, v.MountPoint, pw)
		if err != nil {
			a.holdEncryption(v, fmt.Errorf("adding a recovery password before encrypting: %w", err))
			return nil
		}
		a.changed = true
		a.log.Info("recovery password added before encryption", "volumeId", v.ID, "keyId", id)
		p := bitlocker.Protector{KeyID: id, Type: bitlocker.RecoveryPassword}
		v.Protectors = append(v.Protectors, p)
		rps = append(rps, p)
	}
	escrowed := slices.ContainsFunc(rps, func(p bitlocker.Protector) bool { return a.st.acknowledged(p.KeyID) })
	for _, p := range rps {
		if escrowed {
			break
		}
		if a.refused[p.KeyID] {
			continue
		}
		err := a.escrowKey(ctx, v, p)
		switch {
		case err == nil:
			escrowed = true
		case refused(err) || errors.Is(err, errMaterial):
			a.refused[p.KeyID] = true
			a.event(wire.EventEscrowFailed, v, p.KeyID, err.Error())
		default:
			return a.serverError(err)
		}
	}
	if !escrowed {
		a.log.Warn("not encrypting: no recovery password of the volume is escrowed yet", "volumeId", v.ID)
		return nil
	}
	if err := a.bl.EnableEncryption(ctx, v.MountPoint); err != nil {
		a.holdEncryption(v, fmt.Errorf("starting encryption: %w", err))
		return nil
	}
	a.changed = true
	a.log.Info("encryption started; its recovery password is escrowed", "volumeId", v.ID, "mountPoint", v.MountPoint)
	return nil
}

// holdEncryption logs why BitLocker could not be turned on (no TPM, a policy, ...) and leaves
// it until the next periodic report: such causes rarely pass in minutes, and escrow and reports
// must go on meanwhile.
func (a *Agent) holdEncryption(v bitlocker.Volume, err error) {
	a.encryptionHeld = true
	a.log.Error("BitLocker could not be turned on; trying again at the next report", "volumeId", v.ID, "mountPoint", v.MountPoint, "error", err.Error())
}
