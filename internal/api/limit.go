package api

import (
	"sync"
	"time"
)

// Invalid tokens are audited, and every audit event is a write to the one hash chain. Without
// a bound, a client sending made-up tokens in a loop would fill the audit trail and hold the
// chain's lock against real work. So each client address may send a limited number of invalid
// tokens per window: they are recorded; beyond that the API answers 429 and records only the
// first refusal. Valid tokens are never limited, so devices behind the same NAT as a
// misbehaving client keep working. Token secrets are 256-bit random: the bound is for the log,
// not against guessing.
const (
	authFailureLimit  = 30
	authFailureWindow = 15 * time.Minute
	// authFailureAddresses bounds the memory of the counters; past it, addresses share one
	// counter, so a flood from many addresses is bounded too.
	authFailureAddresses = 10000
)

// failureLimiter counts events per key in fixed windows, in memory: each server bounds its own
// audit writes, so nothing is written to count them.
type failureLimiter struct {
	limit  int
	window time.Duration
	max    int
	now    func() time.Time

	mu     sync.Mutex
	counts map[string]*failureCount
}

type failureCount struct {
	start time.Time
	n     int
}

func newFailureLimiter(limit int, window time.Duration, max int, now func() time.Time) *failureLimiter {
	return &failureLimiter{limit: limit, window: window, max: max, now: now, counts: map[string]*failureCount{}}
}

// hit counts one failure for key. It answers how many failures the window holds with this one,
// and, when that is past the limit, how long until the window ends.
func (l *failureLimiter) hit(key string) (n int, wait time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.counts[key]
	if !ok {
		if len(l.counts) >= l.max {
			l.prune(now)
		}
		if len(l.counts) >= l.max {
			key = "" // the shared counter
		}
		if c, ok = l.counts[key]; !ok {
			c = &failureCount{start: now}
			l.counts[key] = c
		}
	}
	if now.Sub(c.start) >= l.window {
		c.start, c.n = now, 0
	}
	c.n++
	if c.n > l.limit {
		return c.n, c.start.Add(l.window).Sub(now)
	}
	return c.n, 0
}

// prune forgets counters whose window has ended.
func (l *failureLimiter) prune(now time.Time) {
	for k, c := range l.counts {
		if now.Sub(c.start) >= l.window {
			delete(l.counts, k)
		}
	}
}
