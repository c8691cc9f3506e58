package api

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/keyward/keyward/internal/escrow"
)

// settingsJSON is the settings document of SPEC §7: booleans, and durations as strings.
func settingsJSON(s escrow.Settings) map[string]any {
	out := map[string]any{}
	for _, name := range escrow.SettingNames {
		v := s.Get(name)
		if b, err := strconv.ParseBool(v); err == nil && (name == "autoRotateOnDisclosure" || name == "selfServiceEnabled") {
			out[name] = b
		} else {
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
		known := false
		for _, n := range escrow.SettingNames {
			known = known || n == name
		}
		if !known {
			return escrow.Errorf(escrow.CodeInvalid, "%s: unknown field", cleanHeader(name, 64))
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return escrow.Errorf(escrow.CodeInvalid, "%s: not a JSON value", name)
		}
		switch v := v.(type) {
		case bool:
			change[name] = strconv.FormatBool(v)
		case string:
			if name == "autoRotateOnDisclosure" || name == "selfServiceEnabled" {
				return escrow.Errorf(escrow.CodeInvalid, "%s: must be true or false", name)
			}
			change[name] = v
		case float64:
			if name == "maxKeyAge" && v == 0 {
				change[name] = "0"
				continue
			}
			return escrow.Errorf(escrow.CodeInvalid, "%s: give durations as strings, like \"7d\"", name)
		default:
			return escrow.Errorf(escrow.CodeInvalid, "%s: must be a string or true/false", name)
		}
	}
	set, err := s.store.UpdateSettings(r.Context(), origin(r, p), change)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, settingsJSON(set))
}
