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
	var days time.Duration
	if i := strings.IndexByte(rest, 'd'); i >= 0 {
		n, err := strconv.ParseUint(rest[:i], 10, 16)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration like 7d, 36h or 90s", s)
		}
		days = time.Duration(n) * 24 * time.Hour
		rest = rest[i+1:]
	}
	var d time.Duration
	if rest != "" {
		var err error
		if d, err = time.ParseDuration(rest); err != nil {
			return 0, fmt.Errorf("%q is not a duration like 7d, 36h or 90s", s)
		}
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return days + d, nil
}

// FormatDuration writes a duration the way ParseDuration reads it, in whole days where it can.
func FormatDuration(d time.Duration) string {
	const day = 24 * time.Hour
	if d == 0 {
		return "0"
	}
	if d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	return d.String()
}
