package agent

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/agent/bitlocker"
	"github.com/keyward/keyward/internal/agent/wire"
)

// report sends the volumes, with a fingerprint for every recovery password, and the queued
// events, and returns the commands the server answers with. Every volume carries its
// lockStatus (SPEC §7): the server changes no key of a locked volume, whose protector list may
// be unreadable and whose passwords cannot be fingerprinted. A server from before lockStatus
// refuses the field; the report then goes again without it and without the locked volumes
// (which such a server keeps the keys of, as for an unplugged drive).
func (a *Agent) report(ctx context.Context, vols []bitlocker.Volume) ([]wire.Command, error) {
	rep := a.buildReport(ctx, vols)
	cmds, err := a.client.report(ctx, rep)
	var ae *APIError
	if !a.legacyReport && errors.As(err, &ae) && ae.Status == http.StatusBadRequest && strings.Contains(ae.Message, "lockStatus: unknown field") {
		a.legacyReport = true
		a.log.Warn("the server does not know lockStatus (it is older than this agent); locked volumes are left out of reports")
		rep = a.buildReport(ctx, vols)
		cmds, err = a.client.report(ctx, rep)
	}
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
	if a.bookmarks != nil {
		a.st.EventBookmarks = a.bookmarks
	}
	if err := a.save(); err != nil {
		return nil, err
	}
	a.log.Info("reported", "volumes", len(rep.Volumes), "events", len(rep.Events), "commands", len(cmds))
	return cmds, nil
}

func (a *Agent) buildReport(ctx context.Context, vols []bitlocker.Volume) wire.Report {
	rep := wire.Report{Volumes: []wire.Volume{}, Events: []wire.Event{}}
	listed := map[string]bool{}
	for _, v := range vols {
		if v.Locked && a.legacyReport {
			continue
		}
		wv := wire.Volume{VolumeID: v.ID, MountPoint: v.MountPoint, VolumeType: string(v.Type),
			ProtectionStatus: string(v.ProtectionStatus), EncryptionStatus: string(v.EncryptionStatus),
			KeyProtectors: []wire.Protector{}}
		if !a.legacyReport {
			wv.LockStatus = wire.LockUnlocked
			if v.Locked {
				wv.LockStatus = wire.LockLocked
			}
		}
		for _, p := range v.Protectors {
			wp := wire.Protector{KeyID: p.KeyID, Type: string(p.Type)}
			if p.Type == bitlocker.RecoveryPassword && !v.Locked {
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
	return rep
}

// collectRecoveryUnlocks queues a recoveryUsed event for every unlock with a recovery password
// or key that Windows recorded after the event log bookmarks of the last accepted report. The
// server rotates the key: it was typed in at a recovery screen, maybe read out over the phone.
// The bookmarks are positions in the logs, so an unlock written while the clock was wrong (a
// CMOS reset, a new board) is found all the same; only a log's very first read drops what is
// older than the enrollment. A log read with nothing in it yet keeps an empty bookmark, which
// says it was read: from then on everything in it is new, whatever its time.
func (a *Agent) collectRecoveryUnlocks(ctx context.Context, vols []bitlocker.Volume) {
	from := a.st.EventBookmarks
	if a.bookmarks != nil {
		from = a.bookmarks
	}
	unlocks, next, err := a.bl.RecoveryUnlocks(ctx, from)
	if err != nil {
		// Not a reason to hold up escrow; the next cycle looks again. Logs read are kept.
		a.log.Warn("reading the BitLocker event log failed", "error", err.Error())
	}
	if next == nil {
		return
	}
	for _, u := range unlocks {
		if _, read := from[u.Log]; !read && !u.Time.After(a.firstReadSince()) {
			continue // the log's first read ever: what it held before the enrollment is old
		}
		v, keyID := matchUnlock(vols, u)
		if v.ID == "" {
			a.log.Debug("an unlock that names no recovery password of a volume", "eventId", u.EventID, "time", u.Time)
			continue
		}
		a.events = append(a.events, wire.Event{Type: wire.EventRecoveryUsed, VolumeID: v.ID, KeyID: keyID, Time: u.Time.UTC(),
			Message: "Windows event " + strconv.Itoa(u.EventID) + ": unlocked with a recovery password or key"})
		a.log.Warn("a volume was unlocked with its recovery password or key", "volumeId", v.ID, "keyId", keyID, "time", u.Time)
	}
	a.bookmarks = next
}

// firstReadSince is the time before which unlocks are ignored on a log's first read: the
// enrollment, or the last unlock an older agent (which read by time) reported.
func (a *Agent) firstReadSince() time.Time {
	if a.st.RecoverySeenUntil.After(a.st.EnrolledAt) {
		return a.st.RecoverySeenUntil
	}
	return a.st.EnrolledAt
}

// matchUnlock finds the protector an unlock event names: the first GUID of the event that is a
// recovery password of a volume or, for starting Windows with a recovery key, an external key.
// (An unlock of a data volume names whatever protector was used, and automatic unlocking uses
// an external key every day: only a recovery password counts there.) An event for starting
// Windows that names nothing known (the protector was rotated since) is put on the
// operating-system volume.
func matchUnlock(vols []bitlocker.Volume, u bitlocker.RecoveryUnlock) (bitlocker.Volume, string) {
	counts := func(p bitlocker.Protector) bool {
		if u.EventID == bitlocker.EventVolumeUnlocked || u.EventID == bitlocker.EventUnlockedInWinRE {
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
	if u.EventID == bitlocker.EventVolumeUnlocked || u.EventID == bitlocker.EventUnlockedInWinRE {
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
			s.LockStatus = wire.LockLocked
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
			x.ProtectionStatus == y.ProtectionStatus && x.EncryptionStatus == y.EncryptionStatus && x.LockStatus == y.LockStatus && slices.Equal(x.Protectors, y.Protectors)
	})
}
