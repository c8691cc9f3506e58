package bitlocker

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// This file reads what the BitLocker PowerShell cmdlets print: Get-BitLockerVolume piped to
// ConvertTo-Json (integer enums as Windows PowerShell writes them, or names as PowerShell 7
// writes them with -EnumsAsStrings, and as the agent's own script writes them), key protectors
// as Format-List prints them, and BitLocker events from Get-WinEvent.
//
// Every value is checked: an output that is cut off, has a value no Windows release defines, or
// is shaped differently from what the cmdlets print is rejected with an error naming the volume,
// the protector and the field. Such an output means the agent does not understand the system,
// and acting on a guess could remove the wrong protector.

// Microsoft.BitLocker.Structures enums and Win32_EncryptableVolume values, by number and name.
// Names are matched without regard to case.
var (
	volumeTypes = enumTable{field: "VolumeType",
		ints: map[int64]string{0: string(OperatingSystem), 1: string(FixedData), 2: string(Removable)},
		names: map[string]string{"operatingsystem": string(OperatingSystem), "data": string(FixedData),
			"fixeddata": string(FixedData), "removable": string(Removable), "removabledata": string(Removable)}}
	volumeStatuses = enumTable{field: "VolumeStatus",
		ints: map[int64]string{0: string(FullyDecrypted), 1: string(FullyEncrypted), 2: string(EncryptionInProgress),
			3: string(DecryptionInProgress), 4: string(EncryptionPaused), 5: string(DecryptionPaused)},
		names: map[string]string{"fullydecrypted": string(FullyDecrypted), "fullyencrypted": string(FullyEncrypted),
			"encryptioninprogress": string(EncryptionInProgress), "decryptioninprogress": string(DecryptionInProgress),
			"encryptionsuspended": string(EncryptionPaused), "encryptionpaused": string(EncryptionPaused),
			"decryptionsuspended": string(DecryptionPaused), "decryptionpaused": string(DecryptionPaused),
			// A free-space wipe runs on a volume that is already fully encrypted.
			"fullyencryptedwipeinprogress": string(FullyEncrypted), "fullyencryptedwipesuspended": string(FullyEncrypted)}}
	protectionStatuses = enumTable{field: "ProtectionStatus",
		ints: map[int64]string{0: string(ProtectionOff), 1: string(ProtectionOn), 2: string(ProtectionUnknown)},
		names: map[string]string{"off": string(ProtectionOff), "on": string(ProtectionOn), "unknown": string(ProtectionUnknown),
			"unprotected": string(ProtectionOff), "protected": string(ProtectionOn)}}
	lockStatuses = enumTable{field: "LockStatus",
		ints:  map[int64]string{0: "unlocked", 1: "locked"},
		names: map[string]string{"unlocked": "unlocked", "locked": "locked"}}
	protectorTypes = enumTable{field: "KeyProtectorType",
		ints: map[int64]string{0: string(Other), 1: string(TPM), 2: string(ExternalKey), 3: string(RecoveryPassword),
			4: string(TPMPin), 5: string(TPMStartupKey), 6: string(TPMPinStartupKey), 7: string(PublicKey),
			8: string(Password), 9: string(Other), 10: string(Other)},
		names: map[string]string{"unknown": string(Other), "tpm": string(TPM), "externalkey": string(ExternalKey),
			"recoverypassword": string(RecoveryPassword), "numericalpassword": string(RecoveryPassword),
			"tpmpin": string(TPMPin), "tpmstartupkey": string(TPMStartupKey), "tpmpinstartupkey": string(TPMPinStartupKey),
			"publickey": string(PublicKey), "password": string(Password), "tpmnetworkkey": string(Other),
			"adaccountorgroup": string(Other)}}
)

type enumTable struct {
	field string
	ints  map[int64]string
	names map[string]string
}

// decode returns the value's name, or "" when the value is null, absent or an empty string.
func (t enumTable) decode(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", fmt.Errorf("%s: not a JSON string", t.field)
		}
		s = strings.TrimSpace(s)
		if s == "" {
			return "", nil
		}
		if v, ok := t.names[strings.ToLower(s)]; ok {
			return v, nil
		}
		return "", fmt.Errorf("%s: unknown value %s", t.field, describe(raw))
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return "", fmt.Errorf("%s: must be a number or a name, got %s", t.field, describe(raw))
	}
	if v, ok := t.ints[n]; ok {
		return v, nil
	}
	return "", fmt.Errorf("%s: unknown value %s", t.field, describe(raw))
}

// describe shows a JSON value in an error only when it cannot be key material: a number of at
// most four digits, or a short word. Anything else is described by its kind and length.
func describe(raw json.RawMessage) string {
	s := string(raw)
	if n := strings.TrimPrefix(s, "-"); len(n) > 0 && len(n) <= 4 && strings.Trim(n, "0123456789") == "" {
		return s
	}
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		word := s[1 : len(s)-1]
		if len(word) <= 40 && strings.IndexFunc(word, func(r rune) bool { return !unicode.IsLetter(r) }) < 0 {
			return s
		}
		return "a string of " + strconv.Itoa(len(word)) + " characters"
	}
	switch {
	case strings.HasPrefix(s, "{"):
		return "an object"
	case strings.HasPrefix(s, "["):
		return "an array"
	case s == "true" || s == "false":
		return s
	}
	return "a value of " + strconv.Itoa(len(s)) + " characters"
}

// jsonError explains a JSON decoding failure without quoting the input, which may hold key
// material (encoding/json's messages can quote numbers).
func jsonError(what string, err error) error {
	var syntax *json.SyntaxError
	switch {
	case errors.As(err, &syntax):
		if strings.Contains(syntax.Error(), "unexpected end") {
			return fmt.Errorf("%s: the JSON ends early (cut off at byte %d)", what, syntax.Offset)
		}
		return fmt.Errorf("%s: not valid JSON (at byte %d)", what, syntax.Offset)
	}
	return fmt.Errorf("%s: not the JSON shape expected", what)
}

// elements splits a top-level JSON value into its elements: ConvertTo-Json writes one object
// for a single item and an array for several.
func elements(what string, b []byte) ([]json.RawMessage, error) {
	b = bytes.TrimSpace(bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))) // a UTF-8 byte order mark
	if len(b) == 0 {
		return nil, fmt.Errorf("%s: empty, no JSON", what)
	}
	var top json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, jsonError(what, err)
	}
	switch top[0] {
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(top, &items); err != nil {
			return nil, jsonError(what, err)
		}
		return items, nil
	case '{':
		return []json.RawMessage{top}, nil
	case 'n':
		return nil, nil
	}
	return nil, fmt.Errorf("%s: want a JSON object or array, got %s", what, describe(top))
}

// object decodes one element as an object of raw fields, keyed by lower-case name so that field
// names match as PowerShell matches them.
func object(raw json.RawMessage) (map[string]json.RawMessage, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, false
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, false
	}
	out := make(map[string]json.RawMessage, len(m))
	for k, v := range m {
		out[strings.ToLower(k)] = v
	}
	return out, true
}

// stringField returns a field that must be a string (or null / absent: "").
func stringField(m map[string]json.RawMessage, name string) (string, error) {
	raw := bytes.TrimSpace(m[strings.ToLower(name)])
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", fmt.Errorf("%s: must be a string, got %s", name, describe(raw))
	}
	return strings.TrimSpace(s), nil
}

// ParseVolumesJSON reads the volumes in the output of `Get-BitLockerVolume | ConvertTo-Json
// -Depth 4`, or of the agent's own projection of it, which adds VolumeId (the \\?\Volume{GUID}\
// path) and leaves out every protector's material. Material in the input is ignored.
func ParseVolumesJSON(b []byte) ([]Volume, error) {
	const what = "Get-BitLockerVolume output"
	items, err := elements(what, b)
	if err != nil {
		return nil, err
	}
	vols := make([]Volume, 0, len(items))
	seen := map[string]bool{}
	for i, raw := range items {
		v, err := parseJSONVolume(raw)
		if err != nil {
			where := fmt.Sprintf("volume %d", i+1)
			if v.MountPoint != "" {
				where += " (" + Redact(v.MountPoint) + ")"
			}
			return nil, fmt.Errorf("%s: %s: %w", what, where, err)
		}
		if seen[v.ID] {
			return nil, fmt.Errorf("%s: volume %d (%s): listed twice", what, i+1, Redact(v.MountPoint))
		}
		seen[v.ID] = true
		vols = append(vols, v)
	}
	return vols, nil
}

func parseJSONVolume(raw json.RawMessage) (Volume, error) {
	var v Volume
	m, ok := object(raw)
	if !ok {
		return v, fmt.Errorf("not an object, got %s", describe(raw))
	}
	var err error
	if v.MountPoint, err = stringField(m, "MountPoint"); err != nil {
		return v, err
	}
	if v.MountPoint == "" || len(v.MountPoint) > 256 {
		return v, errors.New("MountPoint: missing")
	}
	if v.ID, err = stringField(m, "VolumeId"); err != nil {
		return v, err
	}
	if len(v.ID) > 256 {
		return v, errors.New("VolumeId: longer than 256 characters")
	}
	if v.ID == "" {
		v.ID = v.MountPoint // Get-BitLockerVolume itself gives no unique ID
	}
	vt, err := volumeTypes.decode(m["volumetype"])
	if err != nil {
		return v, err
	}
	if vt == "" {
		return v, errors.New("VolumeType: missing")
	}
	v.Type = VolumeType(vt)
	es, err := volumeStatuses.decode(m["volumestatus"])
	if err != nil {
		return v, err
	}
	ps, err := protectionStatuses.decode(m["protectionstatus"])
	if err != nil {
		return v, err
	}
	ls, err := lockStatuses.decode(m["lockstatus"])
	if err != nil {
		return v, err
	}
	v.EncryptionStatus, v.ProtectionStatus = EncryptionStatus(es), ProtectionStatus(ps)
	// Windows reads neither status of a locked volume. A volume whose status it does not give
	// is left alone like a locked one: the agent cannot act on it safely.
	if ls == "locked" || es == "" || ps == "" || v.ProtectionStatus == ProtectionUnknown {
		v.Locked, v.ProtectionStatus, v.EncryptionStatus = true, ProtectionUnknown, ""
	}
	details, err := parseJSONProtectors(m["keyprotector"], false)
	if err != nil {
		return v, err
	}
	for _, d := range details {
		v.Protectors = append(v.Protectors, d.Protector)
	}
	return v, nil
}

// unwrapArray undoes a quirk of Windows PowerShell 5.1: ConvertTo-Json writes some arrays held
// in a property as {"value": [...], "Count": n}.
func unwrapArray(raw json.RawMessage) json.RawMessage {
	raw = bytes.TrimSpace(raw)
	if m, ok := object(raw); ok && len(m) == 2 && m["count"] != nil {
		if v := bytes.TrimSpace(m["value"]); len(v) > 0 && v[0] == '[' {
			return v
		}
	}
	return raw
}

// parseJSONProtectors reads a KeyProtector member: an array, a single object, or null.
func parseJSONProtectors(raw json.RawMessage, material bool) ([]ProtectorDetail, error) {
	raw = unwrapArray(raw)
	var items []json.RawMessage
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return nil, nil
	case raw[0] == '[':
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, jsonError("KeyProtector", err)
		}
	default:
		items = []json.RawMessage{raw}
	}
	out := make([]ProtectorDetail, 0, len(items))
	seen := map[string]bool{}
	for i, item := range items {
		d, err := parseJSONProtector(item, material)
		if err != nil {
			return nil, fmt.Errorf("KeyProtector %d: %w", i+1, err)
		}
		if seen[d.KeyID] {
			return nil, fmt.Errorf("KeyProtector %d: %s listed twice", i+1, d.KeyID)
		}
		seen[d.KeyID] = true
		out = append(out, d)
	}
	return out, nil
}

func parseJSONProtector(raw json.RawMessage, material bool) (ProtectorDetail, error) {
	var d ProtectorDetail
	m, ok := object(raw)
	if !ok {
		// ConvertTo-Json without -Depth writes nested objects as their type name.
		return d, fmt.Errorf("not an object, got %s (was ConvertTo-Json run with -Depth 4?)", describe(raw))
	}
	id, err := stringField(m, "KeyProtectorId")
	if err != nil {
		return d, err
	}
	if d.KeyID, err = CanonicalKeyID(id); err != nil {
		return d, fmt.Errorf("KeyProtectorId: %w", err)
	}
	t, err := protectorTypes.decode(m["keyprotectortype"])
	if err != nil {
		return d, fmt.Errorf("%s: %w", d.KeyID, err)
	}
	if t == "" {
		return d, fmt.Errorf("%s: KeyProtectorType: missing", d.KeyID)
	}
	d.Type = ProtectorType(t)
	if d.KeyFileName, err = stringField(m, "KeyFileName"); err != nil {
		return d, fmt.Errorf("%s: %w", d.KeyID, err)
	}
	if !material {
		return d, nil
	}
	pw, err := stringField(m, "RecoveryPassword")
	if err != nil {
		return d, fmt.Errorf("%s: %w", d.KeyID, err)
	}
	if err := d.setPassword(pw); err != nil {
		return d, err
	}
	return d, nil
}

// setPassword validates a printed recovery password and keeps its canonical form.
func (d *ProtectorDetail) setPassword(pw string) error {
	if pw == "" {
		return nil
	}
	if d.Type != RecoveryPassword {
		return fmt.Errorf("%s: a %s protector with a recovery password", d.KeyID, d.Type)
	}
	canonical, err := ParsePassword(pw)
	if err != nil {
		return fmt.Errorf("%s: %w", d.KeyID, err)
	}
	d.RecoveryPassword = canonical
	return nil
}

// setExternalKey validates a printed external key: 64 hex digits.
func (d *ProtectorDetail) setExternalKey(s string) error {
	if s == "" {
		return nil
	}
	if d.Type != ExternalKey {
		return fmt.Errorf("%s: a %s protector with an external key", d.KeyID, d.Type)
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		clear(b)
		return fmt.Errorf("%s: ExternalKey: must be 64 hex digits", d.KeyID)
	}
	copy(d.ExternalKey[:], b)
	clear(b)
	d.HasExternalKey = true
	return nil
}

// ParseProtectorsJSON reads key protectors with their material from ConvertTo-Json output: a
// volume or volumes (their KeyProtector members), or protectors themselves. Every recovery
// password printed is checked and returned in canonical form.
func ParseProtectorsJSON(b []byte) ([]ProtectorDetail, error) {
	const what = "key protector JSON"
	items, err := elements(what, b)
	if err != nil {
		return nil, err
	}
	var out []ProtectorDetail
	for i, raw := range items {
		m, ok := object(raw)
		if !ok {
			return nil, fmt.Errorf("%s: item %d: not an object, got %s", what, i+1, describe(raw))
		}
		if kp, isVolume := m["keyprotector"]; isVolume {
			details, err := parseJSONProtectors(kp, true)
			if err != nil {
				mp, _ := stringField(m, "MountPoint")
				return nil, fmt.Errorf("%s: volume %d (%s): %w", what, i+1, Redact(mp), err)
			}
			out = append(out, details...)
			continue
		}
		d, err := parseJSONProtector(raw, true)
		if err != nil {
			return nil, fmt.Errorf("%s: item %d: %w", what, i+1, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// ParseProtectorList reads key protectors as Format-List prints them ("KeyProtectorId : {…}",
// one property a line, a blank line between protectors), with however much padding before the
// colon. Property names are identifiers of the cmdlets' types and are not translated, so this
// works on every Windows language. Besides the cmdlets' properties it reads ExternalKey (64 hex
// digits), which the agent's own script prints.
func ParseProtectorList(text string) ([]ProtectorDetail, error) {
	const what = "key protector list"
	var out []ProtectorDetail
	type record struct {
		line   int
		fields map[string]string
	}
	var records []record
	var cur *record
	for i, line := range strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n") {
		name, value, ok := strings.Cut(line, ":")
		name = strings.TrimSpace(name)
		if !ok || !isIdentifier(name) {
			if strings.TrimSpace(line) == "" {
				cur = nil
			}
			continue
		}
		key := strings.ToLower(name)
		if key == "keyprotectorid" || cur == nil {
			records = append(records, record{line: i + 1, fields: map[string]string{}})
			cur = &records[len(records)-1]
		}
		if _, dup := cur.fields[key]; dup {
			return nil, fmt.Errorf("%s: line %d: %s given twice for one protector", what, i+1, name)
		}
		cur.fields[key] = strings.TrimSpace(value)
	}
	for _, r := range records {
		var d ProtectorDetail
		id, ok := r.fields["keyprotectorid"]
		if !ok {
			return nil, fmt.Errorf("%s: line %d: properties without a KeyProtectorId", what, r.line)
		}
		var err error
		if d.KeyID, err = CanonicalKeyID(id); err != nil {
			return nil, fmt.Errorf("%s: line %d: KeyProtectorId: %w", what, r.line, err)
		}
		t, err := protectorTypes.decode(jsonString(r.fields["keyprotectortype"]))
		if err != nil || t == "" {
			if err == nil {
				err = errors.New("KeyProtectorType: missing")
			}
			return nil, fmt.Errorf("%s: %s: %w", what, d.KeyID, err)
		}
		d.Type = ProtectorType(t)
		d.KeyFileName = r.fields["keyfilename"]
		if err := d.setPassword(r.fields["recoverypassword"]); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		if err := d.setExternalKey(r.fields["externalkey"]); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, d)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no KeyProtectorId line", what)
	}
	return out, nil
}

// jsonString turns a Format-List value into the JSON an enumTable decodes: digits stay a number.
func jsonString(s string) json.RawMessage {
	if s != "" && strings.Trim(s, "0123456789") == "" && len(s) <= 4 {
		return json.RawMessage(s)
	}
	b, _ := json.Marshal(s)
	return b
}

func isIdentifier(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i, r := range s {
		if !(r < 128 && (unicode.IsLetter(r) || i > 0 && unicode.IsDigit(r))) {
			return false
		}
	}
	return true
}

// guidPattern finds GUIDs, braced or not, in event data.
var guidPattern = regexp.MustCompile(`[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}`)

// ParseRecoveryEventsJSON reads BitLocker events as the agent's script prints them from
// Get-WinEvent: objects with Id, TimeCreated (RFC 3339, or "/Date(ms)/" as Windows PowerShell
// writes dates) and the event's data values as Data (strings) or Properties (objects with a
// Value). Every GUID in the data is returned, as a candidate for the protector that was used.
func ParseRecoveryEventsJSON(b []byte) ([]RecoveryUnlock, error) {
	const what = "BitLocker event JSON"
	items, err := elements(what, b)
	if err != nil {
		return nil, err
	}
	out := make([]RecoveryUnlock, 0, len(items))
	for i, raw := range items {
		m, ok := object(raw)
		if !ok {
			return nil, fmt.Errorf("%s: event %d: not an object", what, i+1)
		}
		var ev RecoveryUnlock
		if err := json.Unmarshal(m["id"], &ev.EventID); err != nil || ev.EventID <= 0 {
			return nil, fmt.Errorf("%s: event %d: Id: must be a positive number", what, i+1)
		}
		ts, err := stringField(m, "TimeCreated")
		if err != nil {
			return nil, fmt.Errorf("%s: event %d: %w", what, i+1, err)
		}
		if ev.Time, err = parseEventTime(ts); err != nil {
			return nil, fmt.Errorf("%s: event %d: TimeCreated: %w", what, i+1, err)
		}
		var data []string
		if raw := unwrapArray(m["data"]); len(raw) > 0 && string(raw) != "null" {
			if err := json.Unmarshal(raw, &data); err != nil {
				return nil, fmt.Errorf("%s: event %d: Data: must be an array of strings", what, i+1)
			}
		}
		if raw := m["properties"]; len(raw) > 0 && string(raw) != "null" {
			var props []struct{ Value any }
			if err := json.Unmarshal(raw, &props); err != nil {
				return nil, fmt.Errorf("%s: event %d: Properties: must be an array of objects", what, i+1)
			}
			for _, p := range props {
				data = append(data, fmt.Sprint(p.Value))
			}
		}
		seen := map[string]bool{}
		for _, d := range data {
			for _, g := range guidPattern.FindAllString(d, -1) {
				id := strings.ToUpper(g)
				if !seen[id] {
					seen[id] = true
					ev.GUIDs = append(ev.GUIDs, id)
				}
			}
		}
		out = append(out, ev)
	}
	return out, nil
}

var dotnetDate = regexp.MustCompile(`^/Date\((-?[0-9]{1,15})(?:[+-][0-9]{4})?\)/$`)

func parseEventTime(s string) (time.Time, error) {
	if m := dotnetDate.FindStringSubmatch(s); m != nil {
		ms, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil {
			return time.Time{}, errors.New("not a time")
		}
		return time.UnixMilli(ms).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, errors.New("not an RFC 3339 time")
	}
	return t.UTC(), nil
}
