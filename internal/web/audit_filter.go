package web

import (
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/keyward/keyward/internal/escrow"
)

// auditForm is the audit log's filters as the form holds them: the API's filters, with days
// for since and until (whole UTC days are what people pick).
type auditForm struct {
	DeviceID, KeyID, Actor, Action, Source, Outcome, Ticket, Since, Until string
}

// auditActions are offered as suggestions in the action filter.
var auditActions = []string{
	escrow.ActionKeyRead, escrow.ActionKeyRequest, escrow.ActionKeyApprove, escrow.ActionKeyDeny, escrow.ActionKeyList, escrow.ActionKeyEscrow, escrow.ActionKeySupersede, escrow.ActionKeyVerify,
	escrow.ActionKeyPurge, escrow.ActionRotateRequest, escrow.ActionRotateDeliver, escrow.ActionRotateComplete,
	escrow.ActionRotateFail, escrow.ActionDeviceEnroll, escrow.ActionDeviceReport, escrow.ActionAuth, escrow.ActionSignIn, escrow.ActionSignOut,
	escrow.ActionUserCreate, escrow.ActionUserRole, escrow.ActionUserDisable, escrow.ActionUserEnable, escrow.ActionUserRead,
	escrow.ActionUserSSOLink, escrow.ActionUserSSOLinkAllow,
	escrow.ActionTokenCreate, escrow.ActionTokenRevoke, escrow.ActionTokenRead,
	escrow.ActionEnrollTokenCreate, escrow.ActionEnrollTokenRevoke, escrow.ActionEnrollTokenRead, escrow.ActionSettingsUpdate, escrow.ActionIncidentStart, escrow.ActionIncidentStop,
	escrow.ActionDeviceRead, escrow.ActionDeviceRetire, escrow.ActionDeviceUpdate, escrow.ActionDeviceDispute, escrow.ActionMasterKeyRotate, escrow.ActionMasterKeyRetire,
	escrow.ActionStoreBackup, escrow.ActionStoreRestore, escrow.ActionStoreMigrate, escrow.ActionMetricsRead, escrow.ActionSetupLink, escrow.ActionSetupAdmin,
}

var auditSources = []escrow.Source{escrow.SourceAdminPortal, escrow.SourceSelfService, escrow.SourceAPI, escrow.SourceAgent, escrow.SourceCLI, escrow.SourceSystem}

var auditOutcomes = []escrow.Outcome{escrow.OutcomeSuccess, escrow.OutcomeDenied, escrow.OutcomeError}

// parseAuditForm reads the filters from the query. Errors: CodeInvalid naming the filter.
func parseAuditForm(q url.Values) (auditForm, escrow.AuditFilter, error) {
	fm := auditForm{}
	get := func(name string) string { return strings.TrimSpace(q.Get(name)) }
	fm.DeviceID, fm.KeyID, fm.Actor, fm.Action = get("deviceId"), get("keyId"), get("actor"), get("action")
	fm.Source, fm.Outcome, fm.Ticket, fm.Since, fm.Until = get("source"), get("outcome"), get("ticket"), get("since"), get("until")
	f := escrow.AuditFilter{Actor: fm.Actor, Action: fm.Action, Source: fm.Source, Outcome: fm.Outcome, Ticket: fm.Ticket}
	for name, v := range map[string]string{"actor": fm.Actor, "action": fm.Action, "source": fm.Source, "outcome": fm.Outcome, "ticket": fm.Ticket} {
		if err := escrow.CheckText(name, v, false, 256); err != nil {
			return fm, f, err
		}
	}
	if fm.DeviceID != "" {
		id, err := uuid.Parse(fm.DeviceID)
		if err != nil {
			return fm, f, escrow.Errorf(escrow.CodeInvalid, "Device ID: not a device ID.")
		}
		f.DeviceID = id.String()
	}
	if fm.KeyID != "" {
		id, err := escrow.ParseKeyID(fm.KeyID)
		if err != nil {
			return fm, f, escrow.Errorf(escrow.CodeInvalid, "Key ID: give the whole key ID, like 3F2A9C1B-5D4E-4F60-8A7B-1C2D3E4F5A6B.")
		}
		f.KeyID = id
	}
	day := func(label, v string) (time.Time, error) {
		if v == "" {
			return time.Time{}, nil
		}
		t, err := time.Parse("2006-01-02", v)
		if err != nil {
			return t, escrow.Errorf(escrow.CodeInvalid, "%s: must be a date like 2026-01-31.", label)
		}
		return t, nil
	}
	var err error
	if f.Since, err = day("From", fm.Since); err != nil {
		return fm, f, err
	}
	if f.Until, err = day("To", fm.Until); err != nil {
		return fm, f, err
	}
	if !f.Until.IsZero() {
		f.Until = f.Until.Add(24 * time.Hour) // "to" a day includes that day
	}
	if b := q.Get("before"); b != "" {
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n < 1 {
			return fm, f, escrow.Errorf(escrow.CodeInvalid, "That page of the audit log does not exist.")
		}
		f.Before = n
	}
	return fm, f, nil
}

// values returns the filters as query parameters, for the next page and the export links.
func (fm auditForm) values() url.Values {
	v := url.Values{}
	for name, val := range map[string]string{"deviceId": fm.DeviceID, "keyId": fm.KeyID, "actor": fm.Actor, "action": fm.Action,
		"source": fm.Source, "outcome": fm.Outcome, "ticket": fm.Ticket, "since": fm.Since, "until": fm.Until} {
		if val != "" {
			v.Set(name, val)
		}
	}
	return v
}
