package web

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// bucket is one rate-limit counter: a person's or an address's. A limit of 0 is no limit (the
// per-address self-service limit during incident mode).
type bucket struct {
	key   string
	limit int
}

// attempt counts one attempt against every bucket in the window's current fixed window (in
// the database, so every server counts together), or, when any bucket is full, refuses it
// with the wait and counts nothing. Only the first refusal of a window from a client address
// is recorded, by denied: every audit event is a write to the one hash chain, and a flood of
// refused attempts must neither fill the trail nor hold the chain's lock against real work.
func (s *Server) attempt(r *http.Request, kind string, window time.Duration, denied func(detail string) error, buckets ...bucket) error {
	limits := map[string]int{}
	for _, b := range buckets {
		if b.limit > 0 {
			limits[b.key] = b.limit
		}
	}
	if len(limits) == 0 {
		return nil
	}
	wait, err := s.store.HitRateLimits(r.Context(), window, limits)
	if err != nil || wait == 0 {
		return err
	}
	again, err := s.store.HitRateLimit(r.Context(), "refused:"+kind+":"+clientIP(r), 1, window)
	if err != nil {
		return err
	}
	if again == 0 {
		detail := "too many " + kind + " attempts; further refusals from this address are not recorded for the rest of this " + escrow.FormatDuration(window) + " window"
		if err := denied(detail); err != nil {
			return err
		}
	}
	return &limitedError{wait: wait}
}

// forgive takes back the attempt counted in each bucket, for an attempt that was not a
// failure. Limits on failures count before the check and take back after it, so that many
// attempts at once cannot all pass a limit that none of them has counted yet.
func (s *Server) forgive(r *http.Request, buckets ...bucket) {
	for _, b := range buckets {
		if b.limit <= 0 {
			continue
		}
		// Not the request's context: the sign-in has succeeded, and the client leaving now
		// must not leave a failure counted against it.
		if err := s.store.UndoRateLimit(context.WithoutCancel(r.Context()), b.key); err != nil {
			s.log.LogAttrs(r.Context(), slog.LevelWarn, "rate limit not taken back", slog.String("error", err.Error()))
		}
	}
}

// busyWait is what a request refused because every password check is taken waits: checks take
// a fraction of a second each.
const busyWait = time.Second
