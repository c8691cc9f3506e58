package escrow

import (
	"fmt"
	"strconv"
	"strings"
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
}

// DefaultSettings are the settings of a new installation.
func DefaultSettings() Settings {
	return Settings{
		AutoRotateOnDisclosure: true,
		SelfServiceEnabled:     true,
		RetentionPeriod:        7 * 24 * time.Hour,
		EscrowGracePeriod:      DefaultGracePeriod,
		RotationTimeout:        time.Hour,
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
var SettingNames = []string{"autoRotateOnDisclosure", "selfServiceEnabled", "retentionPeriod", "escrowGracePeriod", "rotationTimeout", "maxKeyAge"}

// Set changes one setting from its API form. Errors: CodeInvalid naming the setting and the rule.
func (s *Settings) Set(name, value string) error {
	var err error
	switch name {
	case "autoRotateOnDisclosure", "selfServiceEnabled":
		var b bool
		if b, err = strconv.ParseBool(value); err == nil {
			*s.flag(name) = b
		}
	default:
		d := s.duration(name)
		if d == nil {
			return Errorf(CodeInvalid, "%s: not a setting", name)
		}
		var v time.Duration
		v, err = ParseDuration(value)
		if err == nil && v < time.Second && !(name == "maxKeyAge" && v == 0) {
			err = fmt.Errorf("too short")
		}
		if err == nil {
			*d = v
		}
	}
	if err != nil {
		return Errorf(CodeInvalid, "%s: %s", name, settingRule(name))
	}
	return nil
}

// Get returns one setting in its API form ("" for an unknown name).
func (s Settings) Get(name string) string {
	switch name {
	case "autoRotateOnDisclosure":
		return strconv.FormatBool(s.AutoRotateOnDisclosure)
	case "selfServiceEnabled":
		return strconv.FormatBool(s.SelfServiceEnabled)
	}
	if d := s.duration(name); d != nil {
		return FormatDuration(*d)
	}
	return ""
}

func (s *Settings) flag(name string) *bool {
	if name == "autoRotateOnDisclosure" {
		return &s.AutoRotateOnDisclosure
	}
	return &s.SelfServiceEnabled
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
	}
	return nil
}

func settingRule(name string) string {
	switch name {
	case "autoRotateOnDisclosure", "selfServiceEnabled":
		return "must be true or false"
	case "maxKeyAge":
		return "must be 0 (off) or a duration of at least 1s, like 90d"
	}
	return "must be a duration of at least 1s, like 7d, 36h or 90s"
}
