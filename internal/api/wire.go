package api

import (
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// The JSON shapes of SPEC §7. Field names are contracts other programs rely on.

// timeOrNull renders the zero time as null.
func timeOrNull(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

type keyJSON struct {
	KeyID            string              `json:"keyId"`
	DeviceID         string              `json:"deviceId"`
	DeviceName       string              `json:"deviceName"`
	VolumeID         string              `json:"volumeId"`
	MountPoint       string              `json:"mountPoint"`
	VolumeType       escrow.VolumeType   `json:"volumeType"`
	Kind             escrow.KeyKind      `json:"kind"`
	Status           escrow.KeyStatus    `json:"status"`
	Verification     escrow.Verification `json:"verification"`
	VerifiedAt       *time.Time          `json:"verifiedAt"`
	CreatedAt        time.Time           `json:"createdAt"`
	RetainUntil      *time.Time          `json:"retainUntil"`
	LastAccessedAt   *time.Time          `json:"lastAccessedAt"`
	AccessCount      int64               `json:"accessCount"`
	RecoveryPassword string              `json:"recoveryPassword,omitempty"`
	RecoveryKey      string              `json:"recoveryKey,omitempty"`
	// What tells devices apart when one key ID is escrowed by several.
	SerialNumber       string          `json:"serialNumber"`
	DeviceEnrolledAt   time.Time       `json:"deviceEnrolledAt"`
	DeviceLastSeenAt   time.Time       `json:"deviceLastSeenAt"`
	DeviceDisputed     bool            `json:"deviceDisputed"`
	SharedWith         []deviceRefJSON `json:"sharedWith"`
	SharedOutsideScope int             `json:"sharedOutsideScope,omitempty"`
}

type deviceRefJSON struct {
	DeviceID   string `json:"deviceId"`
	DeviceName string `json:"deviceName"`
	Disputed   bool   `json:"disputed"`
}

func toKeyJSON(k escrow.RecoveryKey) keyJSON {
	j := keyJSON{
		KeyID: k.KeyID, DeviceID: k.DeviceID, DeviceName: k.DeviceName, VolumeID: k.VolumeID, MountPoint: k.MountPoint,
		VolumeType: k.VolumeType, Kind: k.Kind, Status: k.Status, Verification: k.Verification,
		VerifiedAt: timeOrNull(k.VerifiedAt), CreatedAt: k.CreatedAt.UTC(), RetainUntil: timeOrNull(k.RetainUntil),
		LastAccessedAt: timeOrNull(k.LastAccessedAt), AccessCount: k.AccessCount,
		SerialNumber: k.DeviceSerial, DeviceEnrolledAt: k.DeviceEnrolledAt.UTC(), DeviceLastSeenAt: k.DeviceLastSeenAt.UTC(),
		DeviceDisputed: k.DeviceDisputed, SharedWith: []deviceRefJSON{}, SharedOutsideScope: k.SharedOutside,
	}
	for _, d := range k.SharedWith {
		j.SharedWith = append(j.SharedWith, deviceRefJSON{DeviceID: d.ID, DeviceName: d.Name, Disputed: d.Disputed})
	}
	return j
}

func toDisclosedKeyJSON(k escrow.DisclosedKey) keyJSON {
	j := toKeyJSON(k.RecoveryKey)
	if k.Kind == escrow.KindRecoveryKey {
		j.RecoveryKey = k.Material
	} else {
		j.RecoveryPassword = k.Material
	}
	return j
}

type listJSON[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"nextCursor,omitempty"`
}

type protectorJSON struct {
	KeyID string               `json:"keyId"`
	Type  escrow.ProtectorType `json:"type"`
}

type volumeJSON struct {
	VolumeID           string                  `json:"volumeId"`
	MountPoint         string                  `json:"mountPoint"`
	VolumeType         escrow.VolumeType       `json:"volumeType"`
	ProtectionStatus   escrow.ProtectionStatus `json:"protectionStatus,omitempty"`
	EncryptionStatus   escrow.EncryptionStatus `json:"encryptionStatus,omitempty"`
	LockStatus         escrow.LockStatus       `json:"lockStatus,omitempty"`
	Present            bool                    `json:"present"`
	EscrowStatus       escrow.EscrowStatus     `json:"escrowStatus"`
	EscrowStatusReason string                  `json:"escrowStatusReason,omitempty"`
	KeyProtectors      []protectorJSON         `json:"keyProtectors"`
}

type deviceJSON struct {
	DeviceID           string              `json:"deviceId"`
	DeviceName         string              `json:"deviceName"`
	OwnerUPN           string              `json:"ownerUpn"`
	SerialNumber       string              `json:"serialNumber"`
	OSVersion          string              `json:"osVersion"`
	Tags               []string            `json:"tags"`
	EnrolledAt         time.Time           `json:"enrolledAt"`
	LastSeenAt         time.Time           `json:"lastSeenAt"`
	LastReportAt       *time.Time          `json:"lastReportAt"`
	RetiredAt          *time.Time          `json:"retiredAt"`
	RetiredBy          string              `json:"retiredBy,omitempty"`
	RetireReason       string              `json:"retireReason,omitempty"`
	DisputedAt         *time.Time          `json:"disputedAt"`
	DisputedBy         string              `json:"disputedBy,omitempty"`
	DisputeReason      string              `json:"disputeReason,omitempty"`
	EscrowStatus       escrow.EscrowStatus `json:"escrowStatus"`
	EscrowStatusReason string              `json:"escrowStatusReason,omitempty"`
	Volumes            []volumeJSON        `json:"volumes,omitempty"`
}

func toDeviceJSON(d escrow.DeviceDetail, withVolumes bool) deviceJSON {
	j := deviceJSON{
		DeviceID: d.ID, DeviceName: d.Name, OwnerUPN: d.OwnerUPN, SerialNumber: d.SerialNumber, OSVersion: d.OSVersion,
		Tags: d.Tags, EnrolledAt: d.EnrolledAt.UTC(), LastSeenAt: d.LastSeenAt.UTC(), LastReportAt: timeOrNull(d.ReportedAt),
		EscrowStatus: d.Status.Status, EscrowStatusReason: d.Status.Why,
		RetiredAt: timeOrNull(d.RetiredAt), RetiredBy: d.RetiredBy, RetireReason: d.RetireReason,
		DisputedAt: timeOrNull(d.DisputedAt), DisputedBy: d.DisputedBy, DisputeReason: d.DisputeReason,
	}
	if j.Tags == nil {
		j.Tags = []string{}
	}
	if withVolumes {
		j.Volumes = []volumeJSON{}
		for _, v := range d.Volumes {
			vj := volumeJSON{
				VolumeID: v.ID, MountPoint: v.MountPoint, VolumeType: v.Type, ProtectionStatus: v.ProtectionStatus,
				EncryptionStatus: v.EncryptionStatus, LockStatus: v.LockStatus, Present: v.Present, EscrowStatus: v.Status.Status,
				EscrowStatusReason: v.Status.Why, KeyProtectors: []protectorJSON{},
			}
			for _, p := range v.Protectors {
				vj.KeyProtectors = append(vj.KeyProtectors, protectorJSON{KeyID: p.KeyID, Type: p.Type})
			}
			j.Volumes = append(j.Volumes, vj)
		}
	}
	return j
}

type rotationJSON struct {
	ID          string                `json:"id"`
	DeviceID    string                `json:"deviceId"`
	VolumeID    string                `json:"volumeId"`
	KeyID       string                `json:"keyId,omitempty"`
	Status      escrow.RotationStatus `json:"status"`
	Trigger     string                `json:"trigger"`
	Reason      string                `json:"reason,omitempty"`
	RequestedBy string                `json:"requestedBy"`
	RequestedAt time.Time             `json:"requestedAt"`
	DeliveredAt *time.Time            `json:"deliveredAt"`
	FinishedAt  *time.Time            `json:"finishedAt"`
	NewKeyID    string                `json:"newKeyId,omitempty"`
	Message     string                `json:"message,omitempty"`
}

func toRotationJSON(r escrow.Rotation) rotationJSON {
	return rotationJSON{
		ID: r.ID, DeviceID: r.DeviceID, VolumeID: r.VolumeID, KeyID: r.KeyID, Status: r.Status, Trigger: r.Trigger,
		Reason: r.Reason, RequestedBy: r.RequestedBy, RequestedAt: r.RequestedAt.UTC(), DeliveredAt: timeOrNull(r.DeliveredAt),
		FinishedAt: timeOrNull(r.FinishedAt), NewKeyID: r.NewKeyID, Message: r.Message,
	}
}

type commandJSON struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	VolumeID string `json:"volumeId"`
	KeyID    string `json:"keyId,omitempty"`
}

func toCommandsJSON(cs []escrow.Command) []commandJSON {
	out := make([]commandJSON, 0, len(cs))
	for _, c := range cs {
		out = append(out, commandJSON{ID: c.ID, Type: c.Type, VolumeID: c.VolumeID, KeyID: c.KeyID})
	}
	return out
}
