package agent

import (
	"context"
	"slices"
	"strconv"
	"time"

	"github.com/keyward/keyward/internal/agent/bitlocker"
	"github.com/keyward/keyward/internal/agent/wire"
)

// report sends the volumes, with a fingerprint for every recovery password, and the queued
// events, and returns the commands the server answers with. Locked volumes are left out: their
// status is unknown and their passwords cannot be fingerprinted, and the server keeps the keys
// of a volume missing from a report (as for an unplugged drive).
func (a *Agent) report(ctx context.Context, vols []bitlocker.Volume) ([]wire.Command, error) {
	rep := wire.Report{Volumes: []wire.Volume{}, Events: []wire.Event{}}
	listed := map[string]bool{}
	for _, v := range vols {
		if v.Locked {
			continue
		}
		wv := wire.Volume{VolumeID: v.ID, MountPoint: v.MountPoint, VolumeType: string(v.Type),
			ProtectionStatus: string(v.ProtectionStatus), EncryptionStatus: string(v.EncryptionStatus),
			KeyProtectors: []wire.Protector{}}
		for _, p := range v.Protectors {
			wp := wire.Protector{KeyID: p.KeyID, Type: string(p.Type)}
			if p.Type == bitlocker.RecoveryPassword {
				// The fingerprint proves the escrowed password is still the volume's without
				// sending it again (SPEC §3).
				pw, err := a.recoveryPassword(ctx, v, p.KeyID)
				if err != nil {
					a.log.Warn("no fingerprint for a recovery password", "volumeId", v.ID, "keyId", p.KeyID, "error", err.Error())
				} else {
					wp.Fingerprint = bitlocker.Fingerprint(a.vk, pw)
				}
			}
			wv.KeyProtectors = append(wv.KeyProtectors, wp)
		}
		rep.Volumes = append(rep.Volumes, wv)
		listed[v.ID] = true
	}
	// The server takes events only for volumes it knows; one about a volume not in this report
	// (it was removed or locked since) would refuse the whole report.
	for _, e := range a.events {
		if listed[e.VolumeID] {
			rep.Events = append(rep.Events, e)
		} else {
			a.log.Warn("event dropped: its volume is not in the report", "type", e.Type, "volumeId", e.VolumeID)
		}
	}
	cmds, err := a.client.report(ctx, rep)
	if err != nil {
		return nil, err
	}
	now := a.cfg.Now()
	a.events = nil
	a.reported, a.changed = true, false
	a.nextReport = now.Add(Jitter(a.cfg.ReportInterval, reportJitter, uniform(a.cfg.Rand)))
	a.st.LastReportAt = now.UTC()
	a.st.Volumes = summarize(vols)
	a.st.TokenRefusedAt = time.Time{}
	if a.recoverySeen.After(a.st.RecoverySeenUntil) {
		a.st.RecoverySeenUntil = a.recoverySeen
	}
	if err := a.save(); err != nil {
		return nil, err
	}
	a.log.Info("reported", "volumes", len(rep.Volumes), "events", len(rep.Events), "commands", len(cmds))
	return cmds, nil
}

// collectRecoveryUnlocks queues a recoveryUsed event for every unlock with a recovery password
// or key that Windows recorded since the last one reported. The server rotates the key: it was
// typed in at a recovery screen, maybe read out over the phone.
func (a *Agent) collectRecoveryUnlocks(ctx context.Context, vols []bitlocker.Volume) {
	since := a.st.RecoverySeenUntil
	if a.recoverySeen.After(since) {
		since = a.recoverySeen
	}
	if since.IsZero() {
		since = a.st.EnrolledAt // unlocks before enrollment are not this server's business
	}
	unlocks, err := a.bl.RecoveryUnlocks(ctx, since)
	if err != nil {
		// Not a reason to hold up escrow; the next cycle looks again.
		a.log.Warn("reading the BitLocker event log failed", "error", err.Error())
		return
	}
	for _, u := range unlocks {
		if !u.Time.After(since) {
			continue
		}
		v, keyID := matchUnlock(vols, u)
		if v.ID == "" {
			a.log.Debug("an unlock that names no recovery password of a volume", "eventId", u.EventID, "time", u.Time)
		} else {
			a.events = append(a.events, wire.Event{Type: wire.EventRecoveryUsed, VolumeID: v.ID, KeyID: keyID, Time: u.Time.UTC(),
				Message: "Windows event " + strconv.Itoa(u.EventID) + ": unlocked with a recovery password or key"})
			a.log.Warn("a volume was unlocked with its recovery password or key", "volumeId", v.ID, "keyId", keyID, "time", u.Time)
		}
		if u.Time.After(a.recoverySeen) {
			a.recoverySeen = u.Time
		}
	}
}

// matchUnlock finds the protector an unlock event names: the first GUID of the event that is a
// recovery password of a volume or, for starting Windows with a recovery key, an external key.
// (An unlock of a data volume names whatever protector was used, and automatic unlocking uses
// an external key every day: only a recovery password counts there.) An event for starting
// Windows that names nothing known (the protector was rotated since) is put on the
// operating-system volume.
func matchUnlock(vols []bitlocker.Volume, u bitlocker.RecoveryUnlock) (bitlocker.Volume, string) {
	counts := func(p bitlocker.Protector) bool {
		if u.EventID == bitlocker.EventVolumeUnlocked {
			return p.Type == bitlocker.RecoveryPassword
		}
		return escrowable(p)
	}
	for _, g := range u.GUIDs {
		for _, v := range vols {
			if p, ok := v.Has(g); ok && counts(p) && !v.Locked {
				return v, p.KeyID
			}
		}
	}
	if u.EventID == bitlocker.EventVolumeUnlocked {
		return bitlocker.Volume{}, ""
	}
	for _, v := range vols {
		if v.Type == bitlocker.OperatingSystem && !v.Locked {
			return v, ""
		}
	}
	return bitlocker.Volume{}, ""
}

func summarize(vols []bitlocker.Volume) []VolumeSummary {
	out := make([]VolumeSummary, 0, len(vols))
	for _, v := range vols {
		s := VolumeSummary{VolumeID: v.ID, MountPoint: v.MountPoint, VolumeType: string(v.Type),
			ProtectionStatus: string(v.ProtectionStatus), EncryptionStatus: string(v.EncryptionStatus),
			Protectors: []ProtectorSummary{}}
		if v.Locked {
			s.ProtectionStatus, s.EncryptionStatus = "locked", ""
		}
		for _, p := range v.Protectors {
			s.Protectors = append(s.Protectors, ProtectorSummary{KeyID: p.KeyID, Type: string(p.Type)})
		}
		out = append(out, s)
	}
	return out
}

func sameVolumes(a, b []VolumeSummary) bool {
	return slices.EqualFunc(a, b, func(x, y VolumeSummary) bool {
		return x.VolumeID == y.VolumeID && x.MountPoint == y.MountPoint && x.VolumeType == y.VolumeType &&
			x.ProtectionStatus == y.ProtectionStatus && x.EncryptionStatus == y.EncryptionStatus && slices.Equal(x.Protectors, y.Protectors)
	})
}
