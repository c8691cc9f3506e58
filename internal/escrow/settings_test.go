package escrow_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

const day = 24 * time.Hour

func TestParseDuration(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want time.Duration
	}{
		{"days", "7d", 7 * day},
		{"hours", "36h", 36 * time.Hour},
		{"seconds", "90s", 90 * time.Second},
		{"days and hours", "1d12h", 36 * time.Hour},
		{"days and Go duration", "2d1h30m15s", 2*day + time.Hour + 30*time.Minute + 15*time.Second},
		{"zero", "0", 0},
		{"zero days", "0d", 0},
		{"one second", "1s", time.Second},
		{"Go syntax with minutes", "1h30m", 90 * time.Minute},
		{"fractional hours in Go syntax", "1.5h", 90 * time.Minute},
		{"surrounding whitespace is trimmed (current behaviour)", " 7d\n", 7 * day},
		{"empty string parses as zero (current behaviour)", "", 0},
		{"blank string parses as zero (current behaviour)", "  ", 0},
		{"100 years, the longest accepted", "36500d", 36500 * day},
		{"100 years in hours", "876000h", 36500 * day},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := escrow.ParseDuration(tt.in)
			if err != nil {
				t.Fatalf("ParseDuration(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseDuration(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseDurationRejects(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{name: "unknown unit", in: "7x"},
		{name: "negative", in: "-1h"},
		{name: "negative nanosecond", in: "-1ns"},
		{name: "negative days", in: "-1d"},
		{name: "days and a negative rest", in: "1d-1h"},
		{name: "unit without number", in: "d"},
		{name: "fractional days", in: "1.5d"},
		{name: "upper-case D", in: "7D"},
		{name: "days after hours", in: "1h1d"},
		{name: "days twice", in: "1d1d"},
		{name: "d after days", in: "1dd"},
		{name: "space between number and unit", in: "1 d"},
		{name: "space between parts", in: "1d 12h"},
		{name: "number without unit", in: "7"},
		{name: "hex days", in: "0x7d"},
		{name: "Go duration overflow", in: "2562048h"},
		{name: "days plus Go duration overflow", in: "1d2562047h"},
		{name: "most days plus the largest Go duration", in: "65535d2562047h"},
		{name: "a day over 100 years", in: "36501d"},
		{name: "a second over 100 years", in: "36500d1s"},
		{name: "largest Go duration", in: "2562047h47m16.854775807s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := escrow.ParseDuration(tt.in)
			if err == nil {
				t.Fatalf("ParseDuration(%q) = %v, want an error", tt.in, got)
			}
			if got != 0 {
				t.Errorf("ParseDuration(%q) returned %v with its error", tt.in, got)
			}
		})
	}
}

func TestFormatDuration(t *testing.T) {
	tests := []struct {
		name string
		d    time.Duration
		want string // the exact form where it is fixed: zero and whole days; else only the round trip counts
	}{
		{name: "zero", d: 0, want: "0"},
		{name: "one nanosecond", d: 1},
		{name: "one second", d: time.Second},
		{name: "ninety seconds", d: 90 * time.Second},
		{name: "one hour", d: time.Hour},
		{name: "ninety minutes", d: 90 * time.Minute},
		{name: "36 hours", d: 36 * time.Hour},
		{name: "a day and a second", d: day + time.Second},
		{name: "a day and a half second", d: day + time.Second/2},
		{name: "one day", d: day, want: "1d"},
		{name: "seven days", d: 7 * day, want: "7d"},
		{name: "a year of days", d: 365 * day, want: "365d"},
		{name: "most days ParseDuration reads", d: 36500 * day, want: "36500d"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := escrow.FormatDuration(tt.d)
			if tt.want != "" && s != tt.want {
				t.Errorf("FormatDuration(%v) = %q, want %q", tt.d, s, tt.want)
			}
			if tt.want == "" && (strings.Contains(s, "d") || len(s) > len(tt.d.String())) {
				t.Errorf("FormatDuration(%v) = %q, want Go's form %q or a shorter one without days", tt.d, s, tt.d.String())
			}
			back, err := escrow.ParseDuration(s)
			if err != nil || back != tt.d {
				t.Errorf("ParseDuration(FormatDuration(%v) = %q) = %v, %v; want %v", tt.d, s, back, err, tt.d)
			}
		})
	}
}

func TestSettingsSet(t *testing.T) {
	tests := []struct {
		name, setting, value string
		check                func(s escrow.Settings) bool // the change, when the value is accepted
		wantErr              string                       // substring of the message after "setting: "
	}{
		{name: "retention in days", setting: "retentionPeriod", value: "30d",
			check: func(s escrow.Settings) bool { return s.RetentionPeriod == 30*day }},
		{name: "grace period in seconds", setting: "escrowGracePeriod", value: "90s",
			check: func(s escrow.Settings) bool { return s.EscrowGracePeriod == 90*time.Second }},
		{name: "rotation timeout in hours", setting: "rotationTimeout", value: "36h",
			check: func(s escrow.Settings) bool { return s.RotationTimeout == 36*time.Hour }},
		{name: "retention of exactly one second", setting: "retentionPeriod", value: "1s",
			check: func(s escrow.Settings) bool { return s.RetentionPeriod == time.Second }},
		{name: "maximum key age off", setting: "maxKeyAge", value: "0",
			check: func(s escrow.Settings) bool { return s.MaxKeyAge == 0 }},
		{name: "maximum key age on", setting: "maxKeyAge", value: "90d",
			check: func(s escrow.Settings) bool { return s.MaxKeyAge == 90*day }},
		{name: "auto-rotation off", setting: "autoRotateOnDisclosure", value: "false",
			check: func(s escrow.Settings) bool { return !s.AutoRotateOnDisclosure }},
		{name: "self-service off", setting: "selfServiceEnabled", value: "false",
			check: func(s escrow.Settings) bool { return !s.SelfServiceEnabled }},
		{name: "retention of zero", setting: "retentionPeriod", value: "0", wantErr: "at least 1s"},
		{name: "empty retention", setting: "retentionPeriod", value: "", wantErr: "at least 1s"},
		{name: "grace period under a second", setting: "escrowGracePeriod", value: "999ms", wantErr: "at least 1s"},
		{name: "rotation timeout of zero days", setting: "rotationTimeout", value: "0d", wantErr: "at least 1s"},
		{name: "negative maximum key age", setting: "maxKeyAge", value: "-1h", wantErr: "at least 1s"},
		{name: "maximum key age under a second", setting: "maxKeyAge", value: "1ns", wantErr: "at least 1s"},
		{name: "malformed duration", setting: "retentionPeriod", value: "7x", wantErr: "duration"},
		{name: "boolean as yes", setting: "selfServiceEnabled", value: "yes", wantErr: "true or false"},
		{name: "empty boolean", setting: "autoRotateOnDisclosure", value: "", wantErr: "true or false"},
		{name: "unknown setting", setting: "masterKey", value: "x", wantErr: "not a setting"},
		{name: "setting name in the wrong case", setting: "RetentionPeriod", value: "7d", wantErr: "not a setting"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := escrow.DefaultSettings()
			err := s.Set(tt.setting, tt.value)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Set(%q, %q): %v", tt.setting, tt.value, err)
				}
				if !tt.check(s) {
					t.Errorf("Set(%q, %q) gave %+v", tt.setting, tt.value, s)
				}
				return
			}
			checkFieldError(t, err, tt.setting, tt.wantErr)
			if s != escrow.DefaultSettings() {
				t.Errorf("a refused Set changed the settings to %+v", s)
			}
		})
	}
}

// TestSettingsGetSet checks that what Get writes, Set reads back: the store keeps settings in
// the form Get gives and loads them with Set.
func TestSettingsGetSet(t *testing.T) {
	tests := []struct {
		name, setting, value string
	}{
		{name: "default retention", setting: "retentionPeriod"},
		{name: "default grace period", setting: "escrowGracePeriod"},
		{name: "default rotation timeout", setting: "rotationTimeout"},
		{name: "default maximum key age", setting: "maxKeyAge"},
		{name: "default auto-rotation", setting: "autoRotateOnDisclosure"},
		{name: "default self-service", setting: "selfServiceEnabled"},
		{name: "retention of 36 hours", setting: "retentionPeriod", value: "1d12h"},
		{name: "grace of 90 minutes", setting: "escrowGracePeriod", value: "5400s"},
		{name: "retention of 100 years", setting: "retentionPeriod", value: "36500d"},
		{name: "retention of 100 years in hours", setting: "retentionPeriod", value: "876000h"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := escrow.DefaultSettings()
			if tt.value != "" {
				if err := s.Set(tt.setting, tt.value); err != nil {
					t.Fatalf("Set(%q, %q): %v", tt.setting, tt.value, err)
				}
			}
			stored := s.Get(tt.setting)
			if stored == "" {
				t.Fatalf("Get(%q) is empty", tt.setting)
			}
			var loaded escrow.Settings
			if err := loaded.Set(tt.setting, stored); err != nil {
				t.Fatalf("Set(%q, Get() = %q): %v", tt.setting, stored, err)
			}
			if loaded.Get(tt.setting) != stored {
				t.Errorf("Get after Set(%q) = %q, want %q", stored, loaded.Get(tt.setting), stored)
			}
		})
	}
}

func TestSettingNames(t *testing.T) {
	// SPEC §7: the settings and their API names, then the abuse limits and incident mode.
	want := []string{"autoRotateOnDisclosure", "selfServiceEnabled", "retentionPeriod", "escrowGracePeriod", "rotationTimeout", "maxKeyAge",
		"signInLimitPerAccount", "signInLimitPerAddress", "signInLimitWindow",
		"selfServiceLimitPerPerson", "selfServiceLimitPerAddress", "selfServiceLimitWindow",
		"enrollmentLimitPerAddress", "enrollmentLimitWindow", "incidentModeUntil",
		"ticketRequired", "ticketPattern", "approvalRequired", "approvalForAdmins", "approvalTTL"}
	if !slices.Equal(escrow.SettingNames, want) {
		t.Errorf("SettingNames = %q, want %q", escrow.SettingNames, want)
	}
	s := escrow.DefaultSettings()
	for _, name := range escrow.SettingNames {
		if name != "incidentModeUntil" && name != "ticketPattern" && s.Get(name) == "" {
			t.Errorf("Get(%q) is empty", name)
		}
	}
	if got := s.Get("masterKey"); got != "" {
		t.Errorf("Get of an unknown setting = %q, want empty", got)
	}
}

// TestDefaultSettings checks the defaults against SPEC §7, written as the spec writes them.
func TestDefaultSettings(t *testing.T) {
	s := escrow.DefaultSettings()
	if !s.AutoRotateOnDisclosure {
		t.Error("autoRotateOnDisclosure is off by default, SPEC §7 says on")
	}
	if !s.SelfServiceEnabled {
		t.Error("selfServiceEnabled is off by default, SPEC §7 says on")
	}
	durations := []struct {
		name string
		got  time.Duration
		spec string
	}{
		{"retentionPeriod", s.RetentionPeriod, "7d"},
		{"escrowGracePeriod", s.EscrowGracePeriod, "1h"},
		{"rotationTimeout", s.RotationTimeout, "1h"},
		{"maxKeyAge", s.MaxKeyAge, "0"},
	}
	for _, d := range durations {
		t.Run(d.name, func(t *testing.T) {
			want, err := escrow.ParseDuration(d.spec)
			if err != nil {
				t.Fatalf("ParseDuration(%q): %v", d.spec, err)
			}
			if d.got != want {
				t.Errorf("default %s = %v, want %s (%v)", d.name, d.got, d.spec, want)
			}
		})
	}
	if s.EscrowGracePeriod != escrow.DefaultGracePeriod {
		t.Errorf("default escrowGracePeriod %v differs from DefaultGracePeriod %v", s.EscrowGracePeriod, escrow.DefaultGracePeriod)
	}
}

// TestLimitSettings covers the abuse limits and incident mode: their defaults, their round
// trip through the stored form, and refusals that name the setting.
func TestLimitSettings(t *testing.T) {
	s := escrow.DefaultSettings()
	if s.SignInLimit != (escrow.RateLimit{PerPerson: 10, PerAddress: 100, Window: 15 * time.Minute}) ||
		s.SelfServiceLimit != (escrow.RateLimit{PerPerson: 10, PerAddress: 30, Window: time.Hour}) ||
		s.EnrollLimit != (escrow.RateLimit{PerAddress: 30, Window: 15 * time.Minute}) || !s.IncidentModeUntil.IsZero() {
		t.Fatalf("default limits: %+v %+v %+v %v", s.SignInLimit, s.SelfServiceLimit, s.EnrollLimit, s.IncidentModeUntil)
	}
	for name, value := range map[string]string{"signInLimitPerAccount": "3", "selfServiceLimitPerAddress": "500",
		"enrollmentLimitWindow": "1h", "incidentModeUntil": "2026-12-01T18:00:00+01:00"} {
		if err := s.Set(name, value); err != nil {
			t.Fatalf("Set(%s, %s): %v", name, value, err)
		}
	}
	until := time.Date(2026, 12, 1, 17, 0, 0, 0, time.UTC)
	if s.SignInLimit.PerPerson != 3 || s.SelfServiceLimit.PerAddress != 500 || s.EnrollLimit.Window != time.Hour || !s.IncidentModeUntil.Equal(until) {
		t.Fatalf("after Set: %+v %+v %+v %v", s.SignInLimit, s.SelfServiceLimit, s.EnrollLimit, s.IncidentModeUntil)
	}
	if got := s.Get("incidentModeUntil"); got != "2026-12-01T17:00:00Z" {
		t.Errorf("incidentModeUntil is stored as %q", got)
	}
	if !s.IncidentOn(until.Add(-time.Second)) || s.IncidentOn(until) {
		t.Error("incident mode must be on before its end and off from it")
	}
	if err := s.Set("incidentModeUntil", ""); err != nil || s.IncidentOn(until.Add(-time.Hour)) {
		t.Errorf("an empty incidentModeUntil must switch it off: %v", err)
	}
	for _, tt := range []struct{ name, value string }{
		{"signInLimitPerAccount", "0"}, {"signInLimitPerAddress", "-1"}, {"selfServiceLimitPerPerson", "1.5"},
		{"enrollmentLimitPerAddress", "1000001"}, {"selfServiceLimitPerAddress", "ten"},
		{"signInLimitWindow", "0"}, {"enrollmentLimitWindow", "500ms"},
		{"incidentModeUntil", "tomorrow"}, {"incidentModeUntil", "2026-12-01 18:00"},
	} {
		before := s
		err := s.Set(tt.name, tt.value)
		if escrow.ErrorCode(err) != escrow.CodeInvalid || !strings.HasPrefix(escrow.ErrorMessage(err), tt.name+": ") {
			t.Errorf("Set(%s, %q) = %v, want invalid naming the setting", tt.name, tt.value, err)
		}
		if s != before {
			t.Errorf("Set(%s, %q) changed the settings", tt.name, tt.value)
		}
	}
}

func TestTicketRules(t *testing.T) {
	helpdesk := func(ticket string) escrow.Access {
		return escrow.Access{Reason: "forgotten PIN", Ticket: ticket, Role: escrow.RoleHelpdesk}
	}
	set := func(t *testing.T, kv ...string) escrow.Settings {
		s := escrow.DefaultSettings()
		for i := 0; i < len(kv); i += 2 {
			if err := s.Set(kv[i], kv[i+1]); err != nil {
				t.Fatalf("Set(%s, %s): %v", kv[i], kv[i+1], err)
			}
		}
		return s
	}
	tests := []struct {
		name     string
		settings []string
		access   escrow.Access
		wantErr  string // "" for accepted
	}{
		{"no rule, no ticket", nil, helpdesk(""), ""},
		{"no rule, any ticket", nil, helpdesk("whatever 42"), ""},
		{"required, missing", []string{"ticketRequired", "true"}, helpdesk(""), "ticket: required; give the incident or change number this is for"},
		{"required, blank", []string{"ticketRequired", "true"}, helpdesk("   "), "ticket: required; give the incident or change number this is for"},
		{"required, given", []string{"ticketRequired", "true"}, helpdesk("INC0001234"), ""},
		{"required, admin missing", []string{"ticketRequired", "true"}, escrow.Access{Reason: "x", Role: escrow.RoleAdmin}, "ticket: required; give the incident or change number this is for"},
		{"required, self-service exempt", []string{"ticketRequired", "true"}, escrow.Access{Reason: "x", Role: escrow.RoleUser}, ""},
		{"pattern matches", []string{"ticketPattern", "^INC[0-9]{7}$"}, helpdesk("INC0001234"), ""},
		{"pattern refuses", []string{"ticketPattern", "^INC[0-9]{7}$"}, helpdesk("INC12"), `ticket: "INC12" does not match the required pattern ^INC[0-9]{7}$`},
		{"pattern, optional and absent", []string{"ticketPattern", "^INC[0-9]{7}$"}, helpdesk(""), ""},
		{"control characters", nil, helpdesk("INC\n1"), "ticket: contains control characters"},
		{"too long", nil, helpdesk(strings.Repeat("9", escrow.MaxTicket+1)), "ticket: at most 128 bytes"},
		{"invisible", nil, helpdesk("INC\u202e1"), "ticket: contains an invisible formatting character (U+202E)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := set(t, tt.settings...).CheckTicket(tt.access)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckTicket: %v", err)
				}
				return
			}
			if escrow.ErrorCode(err) != escrow.CodeInvalid || escrow.ErrorMessage(err) != tt.wantErr {
				t.Fatalf("CheckTicket = %v, want invalid %q", err, tt.wantErr)
			}
		})
	}
}

func TestTicketPatternSetting(t *testing.T) {
	for _, bad := range []struct{ pattern, want string }{
		{"^INC[0-9", "ticketPattern: not a regular expression (missing closing ] in `[0-9`)"},
		{"(a", "ticketPattern: not a regular expression (missing closing ) in `(a`)"},
		{"a**", "ticketPattern: not a regular expression (invalid nested repetition operator in `**`)"},
		{"a\x00", "ticketPattern: contains control characters"},
		{strings.Repeat("a", escrow.MaxTicketPattern+1), "ticketPattern: at most 256 bytes"},
	} {
		s := escrow.DefaultSettings()
		err := s.Set("ticketPattern", bad.pattern)
		if escrow.ErrorCode(err) != escrow.CodeInvalid || escrow.ErrorMessage(err) != bad.want {
			t.Errorf("Set(ticketPattern, %q) = %v, want %q", bad.pattern, err, bad.want)
		}
		if s.TicketPattern != "" {
			t.Errorf("a refused pattern was kept: %q", s.TicketPattern)
		}
	}
	s := escrow.DefaultSettings()
	if err := s.Set("ticketPattern", " ^CHG[0-9]+$ "); err != nil || s.Get("ticketPattern") != "^CHG[0-9]+$" {
		t.Fatalf("Set = %v, Get = %q", err, s.Get("ticketPattern"))
	}
	if err := s.Set("ticketPattern", ""); err != nil || s.Get("ticketPattern") != "" {
		t.Fatalf("clearing: Set = %v, Get = %q", err, s.Get("ticketPattern"))
	}
	if err := s.CheckTicket(escrow.Access{Ticket: "anything", Role: escrow.RoleAdmin}); err != nil {
		t.Errorf("a cleared pattern still applies: %v", err)
	}
}

func TestNeedsApproval(t *testing.T) {
	tests := []struct {
		required, admins bool
		role             escrow.Role
		want             bool
	}{
		{false, false, escrow.RoleHelpdesk, false},
		{true, false, escrow.RoleHelpdesk, true},
		{true, false, escrow.RoleAdmin, false},
		{true, true, escrow.RoleAdmin, true},
		{true, true, escrow.RoleUser, false}, // self-service is never held
		{false, true, escrow.RoleAdmin, false},
	}
	for _, tt := range tests {
		s := escrow.DefaultSettings()
		s.ApprovalRequired, s.ApprovalForAdmins = tt.required, tt.admins
		if got := s.NeedsApproval(escrow.Access{Role: tt.role}); got != tt.want {
			t.Errorf("required=%v admins=%v role=%s: NeedsApproval = %v, want %v", tt.required, tt.admins, tt.role, got, tt.want)
		}
	}
	if d := escrow.DefaultSettings(); d.ApprovalRequired || d.ApprovalTTL != time.Hour {
		t.Errorf("defaults: approvalRequired %v, approvalTTL %v; want off and 1h", d.ApprovalRequired, d.ApprovalTTL)
	}
}
