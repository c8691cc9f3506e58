package agent

import (
	"context"
	"errors"
	"net/http"
	"slices"

	"github.com/keyward/keyward/internal/agent/bitlocker"
	"github.com/keyward/keyward/internal/agent/wire"
)

// runCommands carries out the server's commands in order. A rotation under way is finished
// before another starts.
func (a *Agent) runCommands(ctx context.Context, cmds []wire.Command) error {
	for _, c := range cmds {
		if d, ok := a.st.done(c.ID); ok {
			// Carried out already; the server lists it again because the answer to the result
			// was lost. Posting the same result again is idempotent.
			if err := a.postResult(ctx, c.ID, d); err != nil {
				return err
			}
			continue
		}
		var err error
		switch c.Type {
		case wire.CommandRotate:
			err = a.rotate(ctx, c)
		case wire.CommandReEscrow:
			err = a.reEscrow(ctx, c)
		default:
			a.log.Warn("unknown command ignored; a newer agent may know it", "commandId", c.ID, "type", c.Type)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// rotate starts a rotation (SPEC §4): add a new recovery password, escrow it and wait for the
// acknowledgement, remove the old recovery passwords, post the result. Each step is recorded in
// the state file before it is taken (resumeRotation).
func (a *Agent) rotate(ctx context.Context, c wire.Command) error {
	if r := a.st.Rotation; r != nil {
		if r.CommandID != c.ID {
			// One rotation at a time; Cycle finishes the one under way first, so this one
			// comes round again in a later cycle.
			return nil
		}
		return a.resumeRotation(ctx)
	}
	vols, err := a.volumes(ctx)
	if err != nil {
		return err
	}
	r := &RotationStep{CommandID: c.ID, VolumeID: c.VolumeID, OldKeyID: c.KeyID, Phase: phaseAdd}
	if v, ok := findVolume(vols, c.VolumeID); !ok {
		r.Phase, r.Failure = phaseReport, "the volume is not on the device"
	} else if v.Locked {
		r.Phase, r.Failure = phaseReport, "the volume is locked"
	} else {
		r.MountPoint = v.MountPoint
		for _, p := range v.Protectors {
			r.Before = append(r.Before, p.KeyID)
		}
	}
	a.st.Rotation = r
	if err := a.save(); err != nil {
		a.st.Rotation = nil
		return err
	}
	a.log.Info("rotation started", "commandId", c.ID, "volumeId", c.VolumeID, "oldKeyId", c.KeyID)
	return a.resumeRotation(ctx)
}

// resumeRotation carries the rotation under way forward from its recorded phase. It returns an
// error only for a failure that may pass; the rotation then stays recorded and the next cycle
// resumes it.
//
// The old recovery passwords are removed only in phase remove, which is entered only after the
// server acknowledged the new one, and only while the new one is on the volume: the volume is
// never without a recovery password the server holds.
func (a *Agent) resumeRotation(ctx context.Context) error {
	adds := 0
	for {
		r := a.st.Rotation
		if r.Phase == phaseReport {
			return a.finishRotation(ctx)
		}
		if r.Phase == phaseAdd {
			// Starting over is for a protector removed behind the agent's back; one that
			// vanishes again and again means the agent cannot see what it adds.
			if adds++; adds > 3 {
				if err := a.failRotation(ctx, bitlocker.Volume{}, "the new recovery password does not stay on the volume"); err != nil {
					return err
				}
				continue
			}
		}
		vols, err := a.volumes(ctx)
		if err != nil {
			return err
		}
		v, ok := findVolume(vols, r.VolumeID)
		if !ok || v.Locked {
			if err := a.failRotation(ctx, v, "the volume is no longer on the device, or locked"); err != nil {
				return err
			}
			continue
		}
		switch r.Phase {
		case phaseAdd:
			if id := adopted(v, r.Before); id != "" {
				// A crash came between the add and recording it: this is the protector we added.
				r.NewKeyID = id
			} else {
				id, err := a.bl.AddRecoveryPassword(ctx, v.MountPoint)
				if err != nil {
					if err := a.failRotation(ctx, v, "adding a recovery password: "+err.Error()); err != nil {
						return err
					}
					continue
				}
				a.changed = true
				r.NewKeyID = id
				a.log.Info("rotation: recovery password added", "commandId", r.CommandID, "volumeId", r.VolumeID, "newKeyId", id)
			}
			r.Phase = phaseEscrow
		case phaseEscrow:
			p, ok := v.Has(r.NewKeyID)
			if !ok || p.Type != bitlocker.RecoveryPassword {
				// The new protector is gone (removed by hand?): start over.
				a.log.Warn("rotation: the new recovery password is gone; adding another", "commandId", r.CommandID, "keyId", r.NewKeyID)
				r.Phase, r.NewKeyID, r.Before = phaseAdd, "", protectorIDs(v)
				break
			}
			if !a.st.acknowledged(r.NewKeyID) {
				err := a.escrowKey(ctx, v, p)
				switch {
				case err == nil:
				case refused(err) || errors.Is(err, errMaterial):
					if err := a.failRotation(ctx, v, "escrowing the new recovery password: "+err.Error()); err != nil {
						return err
					}
					continue
				default:
					return a.serverError(err)
				}
			}
			r.Phase = phaseRemove
		case phaseRemove:
			if _, ok := v.Has(r.NewKeyID); !ok || !a.st.acknowledged(r.NewKeyID) {
				r.Phase, r.NewKeyID, r.Before = phaseAdd, "", protectorIDs(v)
				break
			}
			// Every recovery password but the new one goes: the view that led to a rotation
			// discloses all of a device's keys, and rotation leaves one recovery password that
			// only the server knows. Other protector types (TPM, PIN, startup key, password,
			// certificates) are never touched. Windows' refusal (the last protector,
			// FVE_E_KEY_REQUIRED; an auto-unlock key) fails the rotation with its code: the
			// agent never suspends protection to force a deletion through.
			for _, p := range v.OfType(bitlocker.RecoveryPassword) {
				if p.KeyID == r.NewKeyID {
					continue
				}
				if err := a.bl.RemoveProtector(ctx, v.MountPoint, p.KeyID); err != nil && !errors.Is(err, bitlocker.ErrNotFound) {
					if err := a.failRotation(ctx, v, "removing the old recovery password "+p.KeyID+": "+err.Error()); err != nil {
						return err
					}
					break
				}
				a.changed = true
				a.log.Info("rotation: old recovery password removed", "commandId", r.CommandID, "volumeId", r.VolumeID, "keyId", p.KeyID)
			}
			if a.st.Rotation.Phase == phaseReport {
				continue // failed above
			}
			// Completed only as the volume shows it: read again, the new password is there and
			// no other recovery password is.
			after, err := a.volumes(ctx)
			if err != nil {
				return err
			}
			v2, ok := findVolume(after, r.VolumeID)
			_, hasNew := v2.Has(r.NewKeyID)
			left := slices.DeleteFunc(protectorIDs(bitlocker.Volume{Protectors: v2.OfType(bitlocker.RecoveryPassword)}), func(id string) bool { return id == r.NewKeyID })
			switch {
			case !ok || !hasNew:
				r.Phase, r.NewKeyID, r.Before = phaseAdd, "", protectorIDs(v2)
			case len(left) > 0:
				if err := a.failRotation(ctx, v2, "the old recovery password "+left[0]+" is still on the volume after its removal"); err != nil {
					return err
				}
				continue
			default:
				r.Phase = phaseReport
			}
		}
		if err := a.save(); err != nil {
			return err
		}
	}
}

// failRotation records that the rotation failed, so the report phase posts the failure. A new
// protector the server never acknowledged is removed again when the volume keeps another
// acknowledged recovery password: nobody holds its password, so it only clutters the volume.
func (a *Agent) failRotation(ctx context.Context, v bitlocker.Volume, msg string) error {
	r := a.st.Rotation
	a.log.Error("rotation failed", "commandId", r.CommandID, "volumeId", r.VolumeID, "error", bitlocker.Redact(msg))
	if r.NewKeyID != "" && !a.st.acknowledged(r.NewKeyID) {
		keep := slices.ContainsFunc(v.OfType(bitlocker.RecoveryPassword), func(p bitlocker.Protector) bool {
			return p.KeyID != r.NewKeyID && a.st.acknowledged(p.KeyID)
		})
		if _, on := v.Has(r.NewKeyID); on && keep {
			if err := a.bl.RemoveProtector(ctx, v.MountPoint, r.NewKeyID); err != nil && !errors.Is(err, bitlocker.ErrNotFound) {
				a.log.Warn("rotation: removing the unescrowed new recovery password failed", "keyId", r.NewKeyID, "error", err.Error())
			} else {
				a.changed = true
			}
		}
	}
	r.Phase, r.Failure = phaseReport, truncate(bitlocker.Redact(msg), 1000)
	return a.save()
}

// finishRotation posts the result of the rotation under way and forgets it. A failed rotation
// is also reported as a rotationFailed event.
func (a *Agent) finishRotation(ctx context.Context) error {
	r := a.st.Rotation
	d := DoneCommand{ID: r.CommandID, Status: wire.StatusCompleted, NewKeyID: r.NewKeyID}
	if r.Failure != "" {
		d = DoneCommand{ID: r.CommandID, Status: wire.StatusFailed, Message: r.Failure}
	}
	if err := a.postResult(ctx, r.CommandID, d); err != nil {
		return err
	}
	if r.Failure != "" {
		a.event(wire.EventRotationFailed, bitlocker.Volume{ID: r.VolumeID}, r.OldKeyID, r.Failure)
	} else {
		a.log.Info("rotation completed", "commandId", r.CommandID, "volumeId", r.VolumeID, "newKeyId", r.NewKeyID)
	}
	a.st.addDone(d)
	a.st.Rotation = nil
	a.changed = true
	return a.save()
}

// postResult posts a command's result. The server answers 200 to a repeat of a result it has;
// 404 or 409 mean it will take no result for the command any more (it timed out, or failed),
// which the agent accepts.
func (a *Agent) postResult(ctx context.Context, commandID string, d DoneCommand) error {
	err := a.client.result(ctx, commandID, wire.CommandResult{Status: d.Status, NewKeyID: d.NewKeyID, Message: d.Message})
	var ae *APIError
	if errors.As(err, &ae) && (ae.Status == http.StatusConflict || ae.Status == http.StatusNotFound) {
		a.log.Warn("the server no longer takes this command's result", "commandId", commandID, "error", err.Error())
		return nil
	}
	if err != nil {
		return a.serverError(err)
	}
	return nil
}

// reEscrow carries out escrowRecoveryPassword: the server holds a password for the key that
// does not match the volume's, and takes the volume's in its place.
func (a *Agent) reEscrow(ctx context.Context, c wire.Command) error {
	vols, err := a.volumes(ctx)
	if err != nil {
		return err
	}
	d := DoneCommand{ID: c.ID, Status: wire.StatusCompleted, NewKeyID: c.KeyID}
	v, _ := findVolume(vols, c.VolumeID)
	p, ok := v.Has(c.KeyID)
	switch {
	case !ok || p.Type != bitlocker.RecoveryPassword:
		d = DoneCommand{ID: c.ID, Status: wire.StatusFailed, Message: "the recovery password is not on the volume"}
	case v.Locked:
		d = DoneCommand{ID: c.ID, Status: wire.StatusFailed, Message: "the volume is locked"}
	default:
		err := a.escrowKey(ctx, v, p)
		switch {
		case err == nil:
		case refused(err) || errors.Is(err, errMaterial):
			d = DoneCommand{ID: c.ID, Status: wire.StatusFailed, Message: truncate(bitlocker.Redact(err.Error()), 1000)}
		default:
			return a.serverError(err)
		}
	}
	if err := a.postResult(ctx, c.ID, d); err != nil {
		return err
	}
	if d.Status == wire.StatusFailed {
		a.event(wire.EventEscrowFailed, v, c.KeyID, d.Message)
	}
	a.st.addDone(d)
	a.changed = true
	return a.save()
}

// adopted returns a recovery password on the volume that was not there before the add: the
// one a crashed add created.
func adopted(v bitlocker.Volume, before []string) string {
	for _, p := range v.OfType(bitlocker.RecoveryPassword) {
		if !slices.Contains(before, p.KeyID) {
			return p.KeyID
		}
	}
	return ""
}

func protectorIDs(v bitlocker.Volume) []string {
	var ids []string
	for _, p := range v.Protectors {
		ids = append(ids, p.KeyID)
	}
	return ids
}
