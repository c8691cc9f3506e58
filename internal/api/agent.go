package api

import (
	"context"
	"encoding/base64"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/recovery"
)

type enrollRequest struct {
	EnrollmentToken string `json:"enrollmentToken"`
	Hostname        string `json:"hostname"`
	SerialNumber    string `json:"serialNumber"`
	OSVersion       string `json:"osVersion"`
	OwnerUPN        string `json:"ownerUpn"`
}

type enrollResponse struct {
	DeviceID        string `json:"deviceId"`
	DeviceToken     string `json:"deviceToken"`
	VerificationKey string `json:"verificationKey"`
}

// agentEnroll serves POST /api/agent/enroll. The enrollment token in the body is the
// credential; the store checks it and records refusals. Failed enrollments are limited per
// client address (in the database, so every server counts together): a client trying
// made-up tokens is refused with 429 once the address has failed enrollmentLimitPerAddress
// times in the window, and only its first refusal of the window is recorded, so it can fill
// neither the audit trail nor the chain's lock. Good enrollments never count: a whole site
// behind one address enrolls as fast as it likes.
func (s *Server) agentEnroll(w http.ResponseWriter, r *http.Request) error {
	var req enrollRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	o := origin(r, escrow.Principal{})
	o.Source = escrow.SourceAgent
	set, err := s.store.Settings(r.Context())
	if err != nil {
		return err
	}
	lim := set.EnrollLimit
	bucket := "enroll:address:" + o.IP
	wait, err := s.store.HitRateLimit(r.Context(), bucket, lim.PerAddress, lim.Window)
	if err != nil {
		return err
	}
	if wait > 0 {
		again, err := s.store.HitRateLimit(r.Context(), "refused:enroll:"+o.IP, 1, lim.Window)
		if err != nil {
			return err
		}
		if again == 0 {
			e := o.Event(escrow.ActionDeviceEnroll, escrow.OutcomeDenied)
			e.Detail = "too many failed enrollments from this address; further refusals are not recorded for the rest of this " +
				escrow.FormatDuration(lim.Window) + " window"
			if err := s.store.Record(r.Context(), e); err != nil {
				return err
			}
		}
		return rateLimited{wait: wait, msg: "too many failed enrollments from this address; try again later"}
	}
	tok, err := escrow.ParseToken(req.EnrollmentToken)
	if err != nil || tok.Kind != escrow.TokenEnrollment {
		return escrow.Errorf(escrow.CodeUnauthorized, "enrollmentToken: not valid, used up, expired or revoked")
	}
	en, err := s.store.Enroll(r.Context(), o, tok, escrow.Enrollment{
		Hostname: req.Hostname, SerialNumber: req.SerialNumber, OSVersion: req.OSVersion, OwnerUPN: req.OwnerUPN,
	})
	if escrow.ErrorCode(err) != escrow.CodeUnauthorized {
		// Only a refused token is a failure; take the attempt back. Not the request's context:
		// the client leaving now must not leave a failure counted against its address.
		if uerr := s.store.UndoRateLimit(context.WithoutCancel(r.Context()), bucket); uerr != nil {
			s.log.LogAttrs(r.Context(), slog.LevelWarn, "rate limit not taken back", slog.String("error", uerr.Error()))
		}
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, enrollResponse{
		DeviceID: en.DeviceID, DeviceToken: en.DeviceToken.String(),
		VerificationKey: base64.StdEncoding.EncodeToString(en.VerificationKey),
	})
}

type escrowRequest struct {
	VolumeID         string            `json:"volumeId"`
	MountPoint       string            `json:"mountPoint"`
	VolumeType       escrow.VolumeType `json:"volumeType"`
	Kind             escrow.KeyKind    `json:"kind"`
	RecoveryPassword *string           `json:"recoveryPassword"`
	RecoveryKey      *string           `json:"recoveryKey"`
}

// agentEscrow serves PUT /api/agent/keys/{keyId}: 201 for a new key, 200 when the same
// material is already held, 409 for different material. It answers only once the key is durable.
func (s *Server) agentEscrow(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	keyID, err := escrow.ParseKeyID(r.PathValue("keyId"))
	if err != nil {
		return err
	}
	var req escrowRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	er := escrow.EscrowRequest{KeyID: keyID, VolumeID: req.VolumeID, MountPoint: req.MountPoint, VolumeType: req.VolumeType, Kind: req.Kind}
	if err := escrow.CheckVolume(req.VolumeID, req.MountPoint, req.VolumeType); err != nil {
		return err
	}
	switch req.Kind {
	case escrow.KindRecoveryPassword:
		if req.RecoveryPassword == nil || req.RecoveryKey != nil {
			return escrow.Errorf(escrow.CodeInvalid, "recoveryPassword: required for kind recoveryPassword (and recoveryKey not allowed)")
		}
		// The parser's errors name the bad block by position and never repeat the digits.
		if er.Material, err = recovery.ParsePassword(*req.RecoveryPassword); err != nil {
			return escrow.Wrap(escrow.CodeInvalid, nil, "recoveryPassword: "+err.Error())
		}
	case escrow.KindRecoveryKey:
		if req.RecoveryKey == nil || req.RecoveryPassword != nil {
			return escrow.Errorf(escrow.CodeInvalid, "recoveryKey: required for kind recoveryKey (and recoveryPassword not allowed)")
		}
		if er.Material, err = recovery.CanonicalRecoveryKey(*req.RecoveryKey); err != nil {
			return escrow.Wrap(escrow.CodeInvalid, nil, "recoveryKey: "+err.Error())
		}
	default:
		return escrow.Errorf(escrow.CodeInvalid, "kind: must be recoveryPassword or recoveryKey")
	}
	created, err := s.store.Escrow(r.Context(), origin(r, p), p.DeviceID, er)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return writeJSON(w, status, map[string]string{"keyId": keyID, "status": "escrowed"})
}

type reportRequest struct {
	Volumes []reportVolume `json:"volumes"`
	Events  []reportEvent  `json:"events"`
}

type reportVolume struct {
	VolumeID         string                  `json:"volumeId"`
	MountPoint       string                  `json:"mountPoint"`
	VolumeType       escrow.VolumeType       `json:"volumeType"`
	ProtectionStatus escrow.ProtectionStatus `json:"protectionStatus"`
	EncryptionStatus escrow.EncryptionStatus `json:"encryptionStatus"`
	LockStatus       escrow.LockStatus       `json:"lockStatus"`
	KeyProtectors    []reportProtector       `json:"keyProtectors"`
}

type reportProtector struct {
	KeyID       string               `json:"keyId"`
	Type        escrow.ProtectorType `json:"type"`
	Fingerprint string               `json:"fingerprint"`
}

type reportEvent struct {
	Type     string    `json:"type"`
	VolumeID string    `json:"volumeId"`
	KeyID    string    `json:"keyId"`
	Message  string    `json:"message"`
	Time     time.Time `json:"time"`
}

// agentReport serves POST /api/agent/report and answers with the device's pending commands.
func (s *Server) agentReport(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	var req reportRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	var rep escrow.Report
	for i, v := range req.Volumes {
		rv := escrow.ReportedVolume{
			Volume: escrow.Volume{DeviceID: p.DeviceID, ID: v.VolumeID, MountPoint: v.MountPoint, Type: v.VolumeType,
				ProtectionStatus: v.ProtectionStatus, EncryptionStatus: v.EncryptionStatus, LockStatus: v.LockStatus, Present: true},
			Fingerprints: map[string]string{},
		}
		for j, kp := range v.KeyProtectors {
			keyID, err := escrow.ParseKeyID(kp.KeyID)
			if err != nil {
				return escrow.Errorf(escrow.CodeInvalid, "volumes[%d].keyProtectors[%d].%s", i, j, escrow.ErrorMessage(err))
			}
			rv.Protectors = append(rv.Protectors, escrow.Protector{KeyID: keyID, Type: kp.Type})
			if kp.Fingerprint != "" {
				rv.Fingerprints[keyID] = strings.ToLower(kp.Fingerprint)
			}
		}
		rep.Volumes = append(rep.Volumes, rv)
	}
	for i, ev := range req.Events {
		de := escrow.DeviceEvent{Type: ev.Type, VolumeID: ev.VolumeID, Message: ev.Message, Time: ev.Time}
		if ev.KeyID != "" {
			keyID, err := escrow.ParseKeyID(ev.KeyID)
			if err != nil {
				return escrow.Errorf(escrow.CodeInvalid, "events[%d].%s", i, escrow.ErrorMessage(err))
			}
			de.KeyID = keyID
		}
		rep.Events = append(rep.Events, de)
	}
	commands, err := s.store.ApplyReport(r.Context(), origin(r, p), p.DeviceID, rep)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string][]commandJSON{"commands": toCommandsJSON(commands)})
}

// agentCommands serves GET /api/agent/commands; fetching a rotation marks it delivered.
func (s *Server) agentCommands(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	commands, err := s.store.Commands(r.Context(), origin(r, p), p.DeviceID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, listJSON[commandJSON]{Items: toCommandsJSON(commands)})
}

type commandResultRequest struct {
	Status   string `json:"status"`
	NewKeyID string `json:"newKeyId"`
	Message  string `json:"message"`
}

// agentCommandResult serves POST /api/agent/commands/{id}/result.
func (s *Server) agentCommandResult(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	id, err := parseDeviceID(r.PathValue("id")) // command IDs are UUIDs too
	if err != nil {
		return escrow.Errorf(escrow.CodeNotFound, "command: no such command for this device")
	}
	var req commandResultRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	res := escrow.CommandResult{Message: req.Message}
	switch req.Status {
	case "completed":
		res.Completed = true
		if res.NewKeyID, err = escrow.ParseKeyID(req.NewKeyID); err != nil {
			return escrow.Errorf(escrow.CodeInvalid, "newKeyId: required for a completed rotation, as a key ID")
		}
	case "failed":
	default:
		return escrow.Errorf(escrow.CodeInvalid, "status: must be completed or failed")
	}
	if err := s.store.FinishCommand(r.Context(), origin(r, p), p.DeviceID, id, res); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]string{"id": id, "status": req.Status})
}
