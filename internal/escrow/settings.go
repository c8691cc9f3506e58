package escrow

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Settings are what an admin changes at run time (SPEC §7).
type Settings struct {
	AutoRotateOnDisclosure bool
	SelfServiceEnabled     bool
	RetentionPeriod        time.Duration
	EscrowGracePeriod      time.Duration
	RotationTimeout        time.Duration
	MaxKeyAge              time.Duration // 0: off

	// Abuse limits, each a fixed window in the database shared by every server. Sign-in and
	// enrollment count failures only; self-service counts every disclosure attempt.
	SignInLimit      RateLimit // PerPerson: failed sign-ins of one account from one address
	SelfServiceLimit RateLimit // PerPerson: disclosure attempts of one person
	EnrollLimit      RateLimit // per address only: failed enrollments
	// IncidentModeUntil, while in the future, lifts the per-address self-service limit (a
	// mass-recovery day sends a whole office behind one address to /my); zero: off.
	IncidentModeUntil time.Time

	// TicketRequired makes staff give a ticket number with every view and rotation.
	TicketRequired bool
	// TicketPattern, when set, is a regular expression every ticket must match (like
	// ^INC[0-9]{7}$); ticketRE is it compiled, set with it by Set.
	TicketPattern string
	ticketRE      *regexp.Regexp
	// ApprovalRequired makes a helpdesk person's view wait for a second person's approval;
	// ApprovalForAdmins makes admins' views wait too. ApprovalTTL is how long a request waits,
	// and how long an approval lasts.
	ApprovalRequired  bool
	ApprovalForAdmins bool
	ApprovalTTL       time.Duration
}

// CheckTicket applies the ticket rules to a ticket given for a in these settings: bounded
// text always, and for staff, present when required and matching the pattern when one is set.
// Self-service gives no ticket and is held to no rule. Errors: CodeInvalid naming the problem.
func (s Settings) CheckTicket(a Access) error {
	if err := CheckText("ticket", a.Ticket, false, MaxTicket); err != nil {
		return err
	}
	if !a.Staff() {
		return nil
	}
	t := strings.TrimSpace(a.Ticket)
	if t == "" {
		if s.TicketRequired {
			return Errorf(CodeInvalid, "ticket: required; give the incident or change number this is for")
		}
		return nil
	}
	if s.ticketRE != nil && !s.ticketRE.MatchString(t) {
		return Errorf(CodeInvalid, "ticket: %q does not match the required pattern %s", t, s.TicketPattern)
	}
	return nil
}

// NeedsApproval reports whether a view of key material by a needs a second person's approval.
func (s Settings) NeedsApproval(a Access) bool {
	return s.ApprovalRequired && (a.Role == RoleHelpdesk || (a.Role == RoleAdmin && s.ApprovalForAdmins))
}

// compiledPattern keeps the last ticket pattern compiled: settings are read on every request,
// and the pattern changes rarely, so it is compiled once per change, not per request.
var compiledPattern struct {
	sync.Mutex
	src string
	re  *regexp.Regexp
}

// compileTicketPattern compiles a ticket pattern, reusing the last one compiled.
func compileTicketPattern(src string) (*regexp.Regexp, error) {
	compiledPattern.Lock()
	defer compiledPattern.Unlock()
	if compiledPattern.re != nil && compiledPattern.src == src {
		return compiledPattern.re, nil
	}
	re, err := regexp.Compile(src)
	if err != nil {
		return nil, err
	}
	compiledPattern.src, compiledPattern.re = src, re
	return re, nil
}

// MaxTicketPattern bounds the ticket pattern's length.
const MaxTicketPattern = 256

// RateLimit is one kind of attempt's limits: at most PerPerson attempts of one person and
// PerAddress attempts from one client address per Window. PerPerson is 0 where no person is known.
type RateLimit struct {
	PerPerson  int
	PerAddress int
	Window     time.Duration
}

// IncidentOn reports whether incident mode is on at now.
func (s Settings) IncidentOn(now time.Time) bool {
	return !s.IncidentModeUntil.IsZero() && now.Before(s.IncidentModeUntil)
}

// MaxIncident is the longest incident mode lasts from when it is switched on: a switch
// forgotten on must not lift a limit for good.
const MaxIncident = 7 * 24 * time.Hour

// MaxLimitCount bounds every limit's count; anything larger is no limit at all.
const MaxLimitCount = 1_000_000

// DefaultSettings are the settings of a new installation.
func DefaultSettings() Settings {
	return Settings{
		AutoRotateOnDisclosure: true,
		SelfServiceEnabled:     true,
		RetentionPeriod:        7 * 24 * time.Hour,
		EscrowGracePeriod:      DefaultGracePeriod,
		RotationTimeout:        time.Hour,
		SignInLimit:            RateLimit{PerPerson: 10, PerAddress: 100, Window: 15 * time.Minute},
		SelfServiceLimit:       RateLimit{PerPerson: 10, PerAddress: 30, Window: time.Hour},
		EnrollLimit:            RateLimit{PerAddress: 30, Window: 15 * time.Minute},
		ApprovalTTL:            time.Hour,
	}
}

// ParseDuration reads a duration in Go syntax plus "d" for days: "7d", "36h", "90s", "1d12h".
func ParseDuration(s string) (time.Duration, error) {
	rest := strings.TrimSpace(s)
	bad := fmt.Errorf("%q is not a duration like 7d, 36h or 90s", s)
	var days time.Duration
	if i := strings.IndexByte(rest, 'd'); i >= 0 {
		n, err := strconv.ParseUint(rest[:i], 10, 64)
		if err != nil || n > MaxDuration/(24*uint64(time.Hour)) {
			return 0, bad
		}
		days = time.Duration(n) * 24 * time.Hour
		rest = rest[i+1:]
	}
	var d time.Duration
	if rest != "" {
		var err error
		if d, err = time.ParseDuration(rest); err != nil {
			return 0, bad
		}
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	if time.Duration(MaxDuration)-days < d {
		return 0, fmt.Errorf("%q is longer than 100 years", s)
	}
	return days + d, nil
}

// MaxDuration is the longest duration a setting takes: 100 years. Anything longer is a typo,
// and a bound keeps every stored value readable.
const MaxDuration = uint64(100 * 365 * 24 * time.Hour)

// FormatDuration writes a duration the way ParseDuration reads it, as briefly as it can: whole
// days as "7d", otherwise Go's form without zero units ("1h", "36h", "1h30m").
func FormatDuration(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d == 0:
		return "0"
	case d%day == 0:
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// SettingNames are the settings' names in the API, in display order.
var SettingNames = []string{"autoRotateOnDisclosure", "selfServiceEnabled", "retentionPeriod", "escrowGracePeriod", "rotationTimeout", "maxKeyAge",
	"signInLimitPerAccount", "signInLimitPerAddress", "signInLimitWindow",
	"selfServiceLimitPerPerson", "selfServiceLimitPerAddress", "selfServiceLimitWindow",
	"enrollmentLimitPerAddress", "enrollmentLimitWindow", "incidentModeUntil",
	"ticketRequired", "ticketPattern", "approvalRequired", "approvalForAdmins", "approvalTTL"}

// SettingKind is how a setting's value is written in the API.
type SettingKind int

const (
	KindUnknown  SettingKind = iota
	KindBool                 // true or false
	KindDuration             // a string like "7d"
	KindCount                // a JSON number
	KindTime                 // an RFC 3339 time, or "" (JSON null) for none
	KindText                 // a string, "" for none
)

// KindOf returns the kind of the named setting (KindUnknown for no setting).
func KindOf(name string) SettingKind {
	var s Settings
	switch {
	case s.flag(name) != nil:
		return KindBool
	case s.duration(name) != nil:
		return KindDuration
	case s.count(name) != nil:
		return KindCount
	case name == "incidentModeUntil":
		return KindTime
	case name == "ticketPattern":
		return KindText
	}
	return KindUnknown
}

// Set changes one setting from its API form. Errors: CodeInvalid naming the setting and the rule.
func (s *Settings) Set(name, value string) error {
	var err error
	switch KindOf(name) {
	case KindBool:
		var b bool
		if b, err = strconv.ParseBool(value); err == nil {
			*s.flag(name) = b
		}
	case KindDuration:
		var v time.Duration
		v, err = ParseDuration(value)
		if err == nil && v < time.Second && !(name == "maxKeyAge" && v == 0) {
			err = fmt.Errorf("too short")
		}
		if err == nil {
			*s.duration(name) = v
		}
	case KindCount:
		var n int
		n, err = strconv.Atoi(strings.TrimSpace(value))
		if err == nil && (n < 1 || n > MaxLimitCount) {
			err = fmt.Errorf("out of range")
		}
		if err == nil {
			*s.count(name) = n
		}
	case KindTime:
		var t time.Time
		if v := strings.TrimSpace(value); v != "" {
			t, err = time.Parse(time.RFC3339, v)
		}
		if err == nil {
			s.IncidentModeUntil = t.UTC()
		}
	case KindText:
		return s.setTicketPattern(value)
	default:
		return Errorf(CodeInvalid, "%s: not a setting", name)
	}
	if err != nil {
		return Errorf(CodeInvalid, "%s: %s", name, settingRule(name))
	}
	return nil
}

// Get returns one setting in its API form ("" for an unknown name, and for no incident).
func (s Settings) Get(name string) string {
	switch KindOf(name) {
	case KindBool:
		return strconv.FormatBool(*s.flag(name))
	case KindDuration:
		return FormatDuration(*s.duration(name))
	case KindCount:
		return strconv.Itoa(*s.count(name))
	case KindTime:
		if s.IncidentModeUntil.IsZero() {
			return ""
		}
		return s.IncidentModeUntil.UTC().Format(time.RFC3339)
	case KindText:
		return s.TicketPattern
	}
	return ""
}

// setTicketPattern checks and compiles a ticket pattern ("" for none). Errors: CodeInvalid
// naming the setting and what is wrong with the pattern.
func (s *Settings) setTicketPattern(value string) error {
	v := strings.TrimSpace(value)
	if err := CheckText("ticketPattern", v, false, MaxTicketPattern); err != nil {
		return err
	}
	if v == "" {
		s.TicketPattern, s.ticketRE = "", nil
		return nil
	}
	re, err := compileTicketPattern(v)
	if err != nil {
		var perr *syntax.Error
		if errors.As(err, &perr) {
			return Errorf(CodeInvalid, "ticketPattern: not a regular expression (%s in `%s`)", perr.Code, perr.Expr)
		}
		return Errorf(CodeInvalid, "ticketPattern: not a regular expression")
	}
	s.TicketPattern, s.ticketRE = v, re
	return nil
}

func (s *Settings) flag(name string) *bool {
	switch name {
	case "autoRotateOnDisclosure":
		return &s.AutoRotateOnDisclosure
	case "selfServiceEnabled":
		return &s.SelfServiceEnabled
	case "ticketRequired":
		return &s.TicketRequired
	case "approvalRequired":
		return &s.ApprovalRequired
	case "approvalForAdmins":
		return &s.ApprovalForAdmins
	}
	return nil
}

func (s *Settings) duration(name string) *time.Duration {
	switch name {
	case "retentionPeriod":
		return &s.RetentionPeriod
	case "escrowGracePeriod":
		return &s.EscrowGracePeriod
	case "rotationTimeout":
		return &s.RotationTimeout
	case "maxKeyAge":
		return &s.MaxKeyAge
	case "signInLimitWindow":
		return &s.SignInLimit.Window
	case "selfServiceLimitWindow":
		return &s.SelfServiceLimit.Window
	case "enrollmentLimitWindow":
		return &s.EnrollLimit.Window
	case "approvalTTL":
		return &s.ApprovalTTL
	}
	return nil
}

func (s *Settings) count(name string) *int {
	switch name {
	case "signInLimitPerAccount":
		return &s.SignInLimit.PerPerson
	case "signInLimitPerAddress":
		return &s.SignInLimit.PerAddress
	case "selfServiceLimitPerPerson":
		return &s.SelfServiceLimit.PerPerson
	case "selfServiceLimitPerAddress":
		return &s.SelfServiceLimit.PerAddress
	case "enrollmentLimitPerAddress":
		return &s.EnrollLimit.PerAddress
	}
	return nil
}

func settingRule(name string) string {
	switch KindOf(name) {
	case KindBool:
		return "must be true or false"
	case KindCount:
		return fmt.Sprintf("must be a whole number from 1 to %d", MaxLimitCount)
	case KindTime:
		return "must be an RFC 3339 time like 2026-12-01T18:00:00Z, or empty for off"
	}
	if name == "maxKeyAge" {
		return "must be 0 (off) or a duration of at least 1s, like 90d"
	}
	return "must be a duration of at least 1s, like 7d, 36h or 90s"
}
