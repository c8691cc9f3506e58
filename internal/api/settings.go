package api

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"

	"github.com/keyward/keyward/internal/escrow"
)

// settingsJSON is the settings document of SPEC §7: booleans, durations as strings, limits
// as numbers, and incidentModeUntil as an RFC 3339 time or null (off).
func settingsJSON(s escrow.Settings) map[string]any {
	out := map[string]any{}
	for _, name := range escrow.SettingNames {
		v := s.Get(name)
		switch escrow.KindOf(name) {
		case escrow.KindBool:
			out[name], _ = strconv.ParseBool(v)
		case escrow.KindCount:
			out[name], _ = strconv.Atoi(v)
		case escrow.KindTime:
			if v == "" {
				out[name] = nil
			} else {
				out[name] = v
			}
		default:
			out[name] = v
		}
	}
	return out
}

// settingsGet serves GET /api/settings (admin).
func (s *Server) settingsGet(w http.ResponseWriter, r *http.Request) error {
	if err := s.authorize(r, principal(r).CanAdminister(), "settings.read", ""); err != nil {
		return err
	}
	set, err := s.store.Settings(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, settingsJSON(set))
}

// settingsPut serves PUT /api/settings (admin): any subset of the settings; all are checked
// before any is stored.
func (s *Server) settingsPut(w http.ResponseWriter, r *http.Request) error {
	p := principal(r)
	if err := s.authorize(r, p.CanAdminister(), escrow.ActionSettingsUpdate, ""); err != nil {
		return err
	}
	var body map[string]json.RawMessage
	if err := decodeJSON(w, r, &body, false); err != nil {
		return err
	}
	change := map[string]string{}
	for name, raw := range body {
		kind := escrow.KindOf(name)
		if kind == escrow.KindUnknown {
			return escrow.Errorf(escrow.CodeInvalid, "%s: unknown field", cleanHeader(name, 64))
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return escrow.Errorf(escrow.CodeInvalid, "%s: not a JSON value", name)
		}
		switch v := v.(type) {
		case bool:
			if kind != escrow.KindBool {
				return escrow.Errorf(escrow.CodeInvalid, "%s: %s", name, wantJSON(name, kind))
			}
			change[name] = strconv.FormatBool(v)
		case string:
			if kind == escrow.KindBool || kind == escrow.KindCount {
				return escrow.Errorf(escrow.CodeInvalid, "%s: %s", name, wantJSON(name, kind))
			}
			change[name] = v
		case float64:
			switch {
			case kind == escrow.KindCount && v == math.Trunc(v) && math.Abs(v) <= escrow.MaxLimitCount+1:
				change[name] = strconv.Itoa(int(v)) // the range is checked with the other rules
			case name == "maxKeyAge" && v == 0:
				change[name] = "0"
			default:
				return escrow.Errorf(escrow.CodeInvalid, "%s: %s", name, wantJSON(name, kind))
			}
		case nil:
			if kind != escrow.KindTime {
				return escrow.Errorf(escrow.CodeInvalid, "%s: %s", name, wantJSON(name, kind))
			}
			change[name] = ""
		default:
			return escrow.Errorf(escrow.CodeInvalid, "%s: %s", name, wantJSON(name, kind))
		}
	}
	set, err := s.store.UpdateSettings(r.Context(), origin(r, p), change)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, settingsJSON(set))
}

// wantJSON says what JSON value a setting takes.
func wantJSON(name string, kind escrow.SettingKind) string {
	switch kind {
	case escrow.KindBool:
		return "must be true or false"
	case escrow.KindCount:
		return "must be a whole number, like 100"
	case escrow.KindTime:
		return "must be an RFC 3339 time like \"2026-12-01T18:00:00Z\", or null for off"
	case escrow.KindText:
		return "must be a string, \"\" for none"
	}
	if name == "maxKeyAge" {
		return "give durations as strings, like \"90d\", or 0 for off"
	}
	return "give durations as strings, like \"7d\""
}
