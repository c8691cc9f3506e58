package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/keyward/keyward/internal/agent/bitlocker"
	"github.com/keyward/keyward/internal/agent/wire"
)

// osVolume returns the operating-system volume, if it is unlocked.
func osVolume(vols []bitlocker.Volume) (bitlocker.Volume, bool) {
	i := slices.IndexFunc(vols, func(v bitlocker.Volume) bool { return v.Type == bitlocker.OperatingSystem && !v.Locked })
	if i < 0 {
		return bitlocker.Volume{}, false
	}
	return vols[i], true
}

// encryptOSVolume turns BitLocker on for a fully decrypted operating-system volume, escrow
// first (SPEC §10): it adds a recovery-password protector if the volume has none, escrows it,
// and only once the server acknowledged a recovery password of the volume adds the TPM
// protector and starts encryption. Nothing needs recording between the steps: after a crash
// the next cycle sees the protectors, escrows what is needed, and goes on.
//
// Windows Home cannot turn BitLocker on (only Device Encryption), and the operating-system
// volume needs a ready TPM: both are told to the server as an escrowFailed event of the
// volume, once per report interval, rather than tried.
func (a *Agent) encryptOSVolume(ctx context.Context, vols []bitlocker.Volume) error {
	v, ok := osVolume(vols)
	if !ok || v.Encrypted() || v.EncryptionStatus != bitlocker.FullyDecrypted || a.encryptionHeld {
		return nil
	}
	if bitlocker.IsHomeEdition(a.cfg.Edition) {
		a.holdEncryption(v, errors.New("BitLocker cannot be turned on: this is a Windows Home edition ("+a.cfg.Edition+"), which has only Device Encryption"))
		return nil
	}
	if err := a.tpmReady(ctx); err != nil {
		a.holdEncryption(v, fmt.Errorf("BitLocker not turned on: %w", err))
		return nil
	}
	escrowed, err := a.escrowFirst(ctx, v, "before encrypting")
	if err != nil || !escrowed {
		return err
	}
	if err := a.bl.AddTPMProtector(ctx, v.MountPoint); err != nil {
		a.holdEncryption(v, fmt.Errorf("adding the TPM protector: %w", err))
		return nil
	}
	a.changed = true
	if err := a.bl.EnableEncryption(ctx, v.MountPoint); err != nil {
		a.holdEncryption(v, fmt.Errorf("starting encryption: %w", err))
		return nil
	}
	a.log.Info("encryption started; its recovery password is escrowed", "volumeId", v.ID, "mountPoint", v.MountPoint)
	return a.confirmEscrow(ctx, v)
}

// activateDeviceEncryption finishes Device Encryption on an operating-system volume that is
// waiting for activation (encrypted with a clear key, protection off, no protector): it adds a
// recovery password, escrows it, and only after the server's acknowledgement adds the TPM
// protector and turns protection on. Before that the disk's data is readable by anyone who holds
// it; after it, the escrowed recovery password is the only way in without the TPM.
//
// The volume is recorded in the state (Activating) before the first change, and the steps are
// resumed from there after a crash: the volume then has a recovery password, maybe the TPM
// protector, and no longer looks like one waiting for activation. The record goes once
// protection is on.
func (a *Agent) activateDeviceEncryption(ctx context.Context, vols []bitlocker.Volume) error {
	v, ok := osVolume(vols)
	if a.st.Activating != "" && (!ok || v.ID != a.st.Activating || v.ProtectionStatus == bitlocker.ProtectionOn) {
		a.st.Activating = "" // done, or the volume is gone
		if err := a.save(); err != nil {
			return err
		}
	}
	if !ok || a.activationHeld {
		return nil
	}
	resuming := a.st.Activating == v.ID && v.ProtectionStatus == bitlocker.ProtectionOff
	if !v.WaitingForActivation() && !resuming {
		return nil
	}
	if !resuming {
		a.st.Activating = v.ID
		if err := a.save(); err != nil {
			return err
		}
		a.log.Info("Device Encryption is waiting for activation: adding and escrowing a recovery password, then the TPM protector", "volumeId", v.ID)
	}
	escrowed, err := a.escrowFirst(ctx, v, "to activate Device Encryption")
	if err != nil || !escrowed {
		return err
	}
	if err := a.tpmReady(ctx); err != nil {
		a.holdActivation(v, fmt.Errorf("activating Device Encryption (its recovery password is escrowed; protection stays off until then): %w", err))
		return nil
	}
	if err := a.bl.AddTPMProtector(ctx, v.MountPoint); err != nil {
		a.holdActivation(v, fmt.Errorf("activating Device Encryption: adding the TPM protector: %w", err))
		return nil
	}
	a.changed = true
	if err := a.bl.EnableProtectors(ctx, v.MountPoint); err != nil {
		a.holdActivation(v, fmt.Errorf("activating Device Encryption: turning protection on: %w", err))
		return nil
	}
	a.log.Info("Device Encryption activated: TPM protector added and protection on; the recovery password is escrowed", "volumeId", v.ID, "mountPoint", v.MountPoint)
	return a.confirmEscrow(ctx, v)
}

// confirmEscrow escrows an acknowledged recovery password of the volume once more after
// encryption started or protection came on. The server answers 200 to the same material, and
// that clears a failure the agent reported for the volume while it could not go on (no TPM, a
// bootable DVD), which nothing else would clear once the volume is protected.
func (a *Agent) confirmEscrow(ctx context.Context, v bitlocker.Volume) error {
	vols, err := a.volumes(ctx)
	if err != nil {
		return err
	}
	v, _ = findVolume(vols, v.ID)
	for _, p := range v.OfType(bitlocker.RecoveryPassword) {
		if !a.st.acknowledged(p.KeyID) {
			continue
		}
		err := a.escrowKey(ctx, v, p)
		if err != nil && !refused(err) && !errors.Is(err, errMaterial) {
			return a.serverError(err)
		}
		return nil
	}
	return nil
}

// errNoTPM says the TPM cannot protect the volume.
var errNoTPM = errors.New("no ready TPM (none, turned off in the firmware, or not initialised)")

// tpmReady returns nil when the TPM is ready, errNoTPM when it is not, and WMI's error when the
// question could not be asked.
func (a *Agent) tpmReady(ctx context.Context) error {
	ready, err := a.bl.TPMReady(ctx)
	switch {
	case err != nil:
		return fmt.Errorf("asking whether the TPM is ready: %w", err)
	case !ready:
		return errNoTPM
	}
	return nil
}

// escrowFirst makes sure the volume has a recovery password the server acknowledged, adding one
// if it has none. It returns false when none is acknowledged yet (a refusal was reported), and
// an error for a failure that may pass.
func (a *Agent) escrowFirst(ctx context.Context, v bitlocker.Volume, why string) (bool, error) {
	rps := v.OfType(bitlocker.RecoveryPassword)
	if len(rps) == 0 {
		id, err := a.bl.AddRecoveryPassword(ctx, v.MountPoint)
		if err != nil {
			msg := fmt.Errorf("adding a recovery password %s: %w", why, err)
			a.log.Error("could not add a recovery password", "volumeId", v.ID, "error", msg.Error())
			a.event(wire.EventEscrowFailed, v, "", msg.Error())
			a.encryptionHeld, a.activationHeld = true, true
			return false, nil
		}
		a.changed = true
		a.log.Info("recovery password added "+why, "volumeId", v.ID, "keyId", id)
		p := bitlocker.Protector{KeyID: id, Type: bitlocker.RecoveryPassword}
		v.Protectors = append(v.Protectors, p)
		rps = append(rps, p)
	}
	if slices.ContainsFunc(rps, func(p bitlocker.Protector) bool { return a.st.acknowledged(p.KeyID) }) {
		return true, nil
	}
	for _, p := range rps {
		if a.refused[p.KeyID] {
			continue
		}
		err := a.escrowKey(ctx, v, p)
		switch {
		case err == nil:
			return true, nil
		case refused(err) || errors.Is(err, errMaterial):
			a.refused[p.KeyID] = true
			a.event(wire.EventEscrowFailed, v, p.KeyID, err.Error())
		default:
			return false, a.serverError(err)
		}
	}
	a.log.Warn("waiting: no recovery password of the volume is escrowed yet", "volumeId", v.ID, "step", why)
	return false, nil
}

// holdEncryption reports why BitLocker could not be turned on (Home, no TPM, a policy, ...) and
// leaves it until the next periodic report: such causes rarely pass in minutes, and escrow and
// reports must go on meanwhile.
func (a *Agent) holdEncryption(v bitlocker.Volume, err error) {
	a.encryptionHeld = true
	a.log.Error("BitLocker could not be turned on; trying again at the next report", "volumeId", v.ID, "mountPoint", v.MountPoint, "error", err.Error())
	a.event(wire.EventEscrowFailed, v, "", err.Error())
}

// holdActivation is holdEncryption for Device Encryption's activation.
func (a *Agent) holdActivation(v bitlocker.Volume, err error) {
	a.activationHeld = true
	a.log.Error("Device Encryption could not be activated; trying again at the next report", "volumeId", v.ID, "mountPoint", v.MountPoint, "error", err.Error())
	a.event(wire.EventEscrowFailed, v, "", err.Error())
}
