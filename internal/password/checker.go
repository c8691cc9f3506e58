package password

import (
	"context"
	"errors"
	"runtime"
	"time"
)

// ErrBusy is returned by a Checker when every slot is taken and its queue is full: the caller
// should answer "try again in a moment" (429 with Retry-After).
var ErrBusy = errors.New("too many password checks at once")

// Each argon2id check allocates memoryKiB (64 MiB) that is garbage the moment it ends, and Go's
// collector lets the heap grow to about twice what is live before it collects. Without a
// bound, a flood of sign-ins is a flood of 64 MiB allocations: 24 at once took a server past
// 1.6 GB. A Checker runs at most maxChecks at once, one per CPU as the hashing is CPU-bound:
// 3 checks in flight is at most about 2 × 3 × 64 MiB = 384 MiB of heap at the collector's
// worst, which keeps a server under 512 MB however many sign-ins arrive on however many CPUs.
const maxChecks = 3

// A Checker bounds the password hashing that runs at once: a few checks run, a few more wait in
// a short queue, and the rest are refused at once with ErrBusy. A refusal costs no memory, so a
// sign-in flood meets a bounded server rather than an exhausted one. Its zero value is not
// usable; make one with NewChecker. Safe for concurrent use.
type Checker struct {
	slots   chan struct{} // one token per check running
	queue   chan struct{} // one token per check waiting
	maxWait time.Duration
}

// NewChecker returns a Checker running at most concurrent checks at once with at most queue
// more waiting, each for at most maxWait. concurrent <= 0 picks one per CPU (GOMAXPROCS), at
// most 3; queue < 0 picks twice the concurrent checks; maxWait <= 0 picks 2 s.
func NewChecker(concurrent, queue int, maxWait time.Duration) *Checker {
	if concurrent <= 0 {
		concurrent = min(runtime.GOMAXPROCS(0), maxChecks)
	}
	if queue < 0 {
		queue = 2 * concurrent
	}
	if maxWait <= 0 {
		maxWait = 2 * time.Second
	}
	return &Checker{slots: make(chan struct{}, concurrent), queue: make(chan struct{}, queue), maxWait: maxWait}
}

// Verify is the package's Verify within the Checker's bound. Errors: ErrBusy when the queue
// is full or the wait too long, the context's error when it ends while waiting, and Verify's.
func (c *Checker) Verify(ctx context.Context, pw, phc string) error {
	if err := c.acquire(ctx); err != nil {
		return err
	}
	defer func() { <-c.slots }()
	return Verify(pw, phc)
}

// Hash is the package's Hash within the Checker's bound (hashing costs what checking does).
func (c *Checker) Hash(ctx context.Context, pw string) (string, error) {
	if err := c.acquire(ctx); err != nil {
		return "", err
	}
	defer func() { <-c.slots }()
	return Hash(pw)
}

func (c *Checker) acquire(ctx context.Context) error {
	select {
	case c.slots <- struct{}{}:
		return nil
	default:
	}
	select {
	case c.queue <- struct{}{}:
	default:
		return ErrBusy
	}
	defer func() { <-c.queue }()
	t := time.NewTimer(c.maxWait)
	defer t.Stop()
	select {
	case c.slots <- struct{}{}:
		return nil
	case <-t.C:
		return ErrBusy
	case <-ctx.Done():
		return ctx.Err()
	}
}
