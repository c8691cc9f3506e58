package agent

import (
	"encoding/binary"
	"io"
	"time"
)

// Backoff is how long the agent waits before retrying work that failed for a reason that may
// pass (the server down or unreachable, a 5xx, BitLocker busy).
type Backoff struct {
	Base time.Duration // the wait before the first retry, before jitter
	Max  time.Duration // the longest wait, before jitter
}

// DefaultBackoff retries after about 10 s, then doubles up to about 15 minutes.
var DefaultBackoff = Backoff{Base: 10 * time.Second, Max: 15 * time.Minute}

// Delay returns the wait before retry number attempt (0 for the first retry): the step
// Base·2^attempt, capped at Max, of which a random part of up to half is taken off ("equal
// jitter"). Devices that failed together, because the server went down, thus come back spread
// out rather than all at once, and never sooner than half the step. f is uniform in [0, 1).
func (b Backoff) Delay(attempt int, f float64) time.Duration {
	step := b.Base
	for i := 0; i < attempt && step < b.Max; i++ {
		step *= 2 // stops at Max long before it could overflow
	}
	step = min(step, b.Max)
	return step/2 + time.Duration(f*float64(step/2))
}

// Jitter spreads d by up to ±frac: d·(1 + frac·(2f−1)) for f uniform in [0, 1). Periodic reports
// are spread so that a fleet started at once does not report at once ever after.
func Jitter(d time.Duration, frac, f float64) time.Duration {
	return d + time.Duration(frac*(2*f-1)*float64(d))
}

// uniform reads a float in [0, 1) from r; 0.5 if r fails, which only removes the jitter.
func uniform(r io.Reader) float64 {
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0.5
	}
	return float64(binary.LittleEndian.Uint64(b[:])>>11) / (1 << 53)
}
