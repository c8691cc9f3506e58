package api

import (
	"net/http"

	"github.com/keyward/keyward/internal/escrow"
)

// keysList serves GET /api/devices/security/bitlocker/keys: key metadata, never material.
func (s *Server) keysList(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	q := newQuery(r, "deviceId", "keyId", "volumeType", "status", "escrowStatus", "limit", "cursor")
	f := escrow.KeyFilter{
		Scope:        p.Scope(),
		DeviceID:     q.deviceID("deviceId"),
		VolumeType:   escrow.VolumeType(q.str("volumeType", 32)),
		Status:       escrow.KeyStatus(q.str("status", 32)),
		EscrowStatus: escrow.EscrowStatus(q.str("escrowStatus", 32)),
		Cursor:       q.str("cursor", 512),
		Limit:        q.limit(100),
	}
	if err := s.authorize(r, p.CanList(), escrow.ActionKeyList, f.DeviceID); err != nil {
		return err
	}
	if v := q.values.Get("keyId"); v != "" {
		prefix, err := escrow.ParseKeyIDPrefix(v)
		if err != nil {
			return err
		}
		f.KeyIDPrefix = prefix
	}
	if f.VolumeType != "" && !f.VolumeType.Valid() {
		q.fail(escrow.Errorf(escrow.CodeInvalid, "volumeType: must be operatingSystem, fixedData or removable"))
	}
	if f.Status != "" && !f.Status.Valid() {
		q.fail(escrow.Errorf(escrow.CodeInvalid, "status: must be active, superseded or purged"))
	}
	if f.EscrowStatus != "" && !f.EscrowStatus.Valid() {
		q.fail(escrow.Errorf(escrow.CodeInvalid, "escrowStatus: must be escrowed, pending, failed or notAvailable"))
	}
	if q.err != nil {
		return q.err
	}
	keys, next, err := s.store.ListKeys(r.Context(), origin(r, p), f)
	if err != nil {
		return err
	}
	out := listJSON[keyJSON]{Items: make([]keyJSON, 0, len(keys)), NextCursor: next}
	for _, k := range keys {
		out.Items = append(out.Items, toKeyJSON(k))
	}
	return writeJSON(w, http.StatusOK, out)
}
