// Package delivery sends the audit trail to outside receivers (a SIEM over syslog, a webhook):
// from the durable trail in the store, in order, at least once, resuming after a stored
// per-sink cursor after a restart or an outage, so nothing is skipped. Each event carries its
// seq and hash, so receivers can drop the duplicates a crash can cause and verify the chain.
//
// With several servers on one database, each sink is delivered by one server at a time: a
// lease row per sink, taken and renewed in short transactions, that another server takes over
// when it runs out. The Gate makes a disclosure of key material wait until its key.read event
// was delivered to a required sink (the fail-closed setting).
//
// Threat: the trail is the evidence that someone read a key. A receiver that misses events, or
// gets them out of order, or an operator who can switch delivery off unnoticed, weakens it; the
// lag metrics show a sink falling behind, and the fail-closed setting trades the availability
// of keys for the certainty that the SIEM saw every read. Events never carry key material.
package delivery

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// Sink receives audit events in trail order. Deliver hands it the next events after the
// sink's cursor; it returns how many of them, from the first, the receiver has accepted
// (durably, as far as the protocol can tell), and an error if it stopped short. The runner
// advances the stored cursor past the accepted ones and retries the rest with backoff, so a
// sink sees each event at least once and in order (again only after a crash or a failed batch).
type Sink interface {
	Name() string // stable: the cursor's key, the metrics label ("syslog", "webhook", "email")
	Deliver(ctx context.Context, events []escrow.AuditEvent) (accepted int, err error)
}

// HeadStarter is a Sink that, with no cursor yet, starts after the newest event whatever
// Options.AtHead says: one that acts on events (emails people) rather than keeping them, for
// which the history before it was turned on is not news.
type HeadStarter interface {
	StartsAtHead() bool
}

// Store is what delivery needs from storage: the trail read in order through the read pool,
// and the per-sink cursor and lease, each changed in one short transaction.
type Store interface {
	AuditAfter(ctx context.Context, after int64, limit int) ([]escrow.AuditEvent, error)
	TakeDeliveryLease(ctx context.Context, sink, holder string, ttl time.Duration, atHead bool) (escrow.DeliveryState, bool, error)
	AdvanceDelivery(ctx context.Context, sink, holder string, seq int64, ttl time.Duration) (bool, error)
	MarkDeliveryFailing(ctx context.Context, sink, holder string, ttl time.Duration) (bool, error)
	ReleaseDeliveryLease(ctx context.Context, sink, holder string) error
	DeliveryStates(ctx context.Context, sinks []string) ([]escrow.DeliveryState, error)
}

// Observer counts what the runner does; the metrics implement it.
type Observer interface {
	// DeliveredEvents counts events a sink accepted.
	DeliveredEvents(sink string, events int)
	// DeliveryFailed counts one failed attempt to deliver to a sink.
	DeliveryFailed(sink string)
}

// Options configure a Runner. The zero value of each field means its default.
type Options struct {
	// Holder names this server in the lease rows; it must differ between servers sharing a
	// database (default: random).
	Holder string
	// BatchSize is the most events handed to a sink at once (default 100).
	BatchSize int
	// Poll is how often a caught-up sink looks for new events (default 1 s); Wake makes it
	// look at once.
	Poll time.Duration
	// LeaseTTL is how long a lease lasts without renewal (default 30 s); another server takes
	// a sink over at most this long after its holder stopped.
	LeaseTTL time.Duration
	// MinBackoff and MaxBackoff bound the wait before retrying a failed delivery (default
	// 1 s and 30 s): it doubles from the one to the other, each wait drawn at random from its
	// upper half so servers do not retry in step. MaxBackoff is held under half the lease.
	MinBackoff, MaxBackoff time.Duration
	// AtHead makes a sink that has no cursor yet start after the newest event instead of at
	// the beginning of the trail.
	AtHead bool
	// AttemptTimeout bounds one call of Deliver (default 30 s).
	AttemptTimeout time.Duration
	Observer       Observer
	Log            *slog.Logger
}

func (o *Options) defaults() {
	if o.Holder == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		o.Holder = fmt.Sprintf("%x", b)
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 100
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 30 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	o.MaxBackoff = min(o.MaxBackoff, o.LeaseTTL/2)
	o.MinBackoff = min(o.MinBackoff, o.MaxBackoff)
	if o.AttemptTimeout <= 0 {
		o.AttemptTimeout = 30 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
}

// Runner delivers the trail to its sinks, one goroutine per sink.
type Runner struct {
	store Store
	sinks []Sink
	opts  Options

	mu     sync.Mutex
	wake   map[string]chan struct{} // per sink, buffered 1: look for new events now
	moved  chan struct{}            // closed and replaced whenever a cursor moves here
	failed map[string]bool          // sinks whose last attempt here failed
}

// NewRunner returns a runner of sinks over store. Sink names must be unique.
func NewRunner(store Store, sinks []Sink, opts Options) (*Runner, error) {
	opts.defaults()
	r := &Runner{store: store, sinks: sinks, opts: opts, wake: map[string]chan struct{}{},
		moved: make(chan struct{}), failed: map[string]bool{}}
	for _, s := range sinks {
		if _, dup := r.wake[s.Name()]; dup {
			return nil, fmt.Errorf("delivery: two sinks are named %q", s.Name())
		}
		r.wake[s.Name()] = make(chan struct{}, 1)
	}
	return r, nil
}

// Sinks returns the names of the runner's sinks.
func (r *Runner) Sinks() []string {
	names := make([]string, len(r.sinks))
	for i, s := range r.sinks {
		names[i] = s.Name()
	}
	return names
}

// Wake makes every caught-up sink look for new events now rather than at its next poll.
func (r *Runner) Wake() {
	for _, ch := range r.wake {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Run delivers until ctx is done, then releases the leases this server holds, so another
// server takes over at once.
func (r *Runner) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, s := range r.sinks {
		wg.Go(func() { r.runSink(ctx, s) })
	}
	wg.Wait()
}

// movedChan returns a channel closed at the next cursor move made by this runner.
func (r *Runner) movedChan() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.moved
}

// noteMoved records the outcome of a step on sink: failed, or caught up or moved, which wakes
// the disclosures waiting for the cursor.
func (r *Runner) noteMoved(sink string, failed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed[sink] = failed
	if !failed {
		close(r.moved)
		r.moved = make(chan struct{})
	}
}

// noteHandedOver forgets this server's failures on sink once another server delivers it: the
// state in the database, which that server keeps, says whether the sink is down.
func (r *Runner) noteHandedOver(sink string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed[sink] = false
}

// failing reports whether this runner's last attempt on sink failed.
func (r *Runner) failing(sink string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed[sink]
}

// sinkState is what one sink's goroutine knows between steps.
type sinkState struct {
	name     string
	log      *slog.Logger
	cursor   int64
	renewAt  time.Time // when the lease must be renewed (a third of its time before it runs out); zero: not held
	failures int       // failed attempts in a row
}

func (r *Runner) runSink(ctx context.Context, s Sink) {
	st := &sinkState{name: s.Name(), log: r.opts.Log.With(slog.String("sink", s.Name()))}
	defer func() {
		if st.renewAt.IsZero() {
			return
		}
		// The context is done; the release gets a moment of its own.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := r.store.ReleaseDeliveryLease(rctx, st.name, r.opts.Holder); err != nil {
			st.log.Warn("audit delivery: could not release the lease", slog.String("error", err.Error()))
		}
	}()
	for ctx.Err() == nil {
		wait, more := r.step(ctx, s, st)
		if more {
			continue // a full batch went: more may be waiting
		}
		select {
		case <-ctx.Done():
		case <-r.wake[st.name]:
		case <-time.After(wait):
		}
	}
}

// step takes or renews the lease when due and delivers one batch. It returns true when it
// delivered a full batch (more may wait), else how long to wait before the next step.
func (r *Runner) step(ctx context.Context, s Sink, st *sinkState) (time.Duration, bool) {
	ttl := r.opts.LeaseTTL
	if st.renewAt.IsZero() || !time.Now().Before(st.renewAt) {
		taken := time.Now()
		atHead := r.opts.AtHead
		if h, ok := s.(HeadStarter); ok && h.StartsAtHead() {
			atHead = true
		}
		row, held, err := r.store.TakeDeliveryLease(ctx, st.name, r.opts.Holder, ttl, atHead)
		if err != nil {
			st.renewAt = time.Time{}
			return r.fail(ctx, st, "could not take the lease", err), false
		}
		if !held {
			// Another server delivers this sink; look again within the lease's time.
			st.renewAt, st.failures = time.Time{}, 0
			r.noteHandedOver(st.name)
			return ttl / 3, false
		}
		st.cursor, st.renewAt = row.Cursor, taken.Add(ttl*2/3)
	}
	events, err := r.store.AuditAfter(ctx, st.cursor, r.opts.BatchSize)
	if err != nil {
		return r.fail(ctx, st, "could not read the trail", err), false
	}
	if len(events) == 0 {
		if st.failures == 0 {
			r.noteMoved(st.name, false)
		}
		return min(r.opts.Poll, time.Until(st.renewAt)), false
	}
	actx, cancel := context.WithTimeout(ctx, r.opts.AttemptTimeout)
	accepted, derr := s.Deliver(actx, events)
	cancel()
	accepted = max(0, min(accepted, len(events)))
	if accepted > 0 {
		renewed := time.Now()
		held, err := r.store.AdvanceDelivery(ctx, st.name, r.opts.Holder, events[accepted-1].Seq, ttl)
		if err != nil {
			// The receiver has the events but the cursor did not move: they go again after
			// the lease is taken anew (the receiver drops them by seq).
			st.renewAt = time.Time{}
			return r.fail(ctx, st, "could not store the cursor", err), false
		}
		if r.opts.Observer != nil {
			r.opts.Observer.DeliveredEvents(st.name, accepted)
		}
		if !held {
			st.log.Info("audit delivery: another server took the sink over")
			st.renewAt, st.failures = time.Time{}, 0
			r.noteHandedOver(st.name)
			return ttl / 3, false
		}
		st.cursor, st.renewAt = events[accepted-1].Seq, renewed.Add(ttl*2/3)
	}
	if derr == nil && accepted < len(events) {
		derr = errors.New("the receiver accepted only part of the batch")
	}
	if derr != nil {
		if ctx.Err() != nil {
			return 0, false
		}
		if r.opts.Observer != nil {
			r.opts.Observer.DeliveryFailed(st.name)
		}
		r.noteMoved(st.name, true)
		if held, err := r.store.MarkDeliveryFailing(ctx, st.name, r.opts.Holder, ttl); err != nil || !held {
			st.renewAt = time.Time{}
		} else {
			st.renewAt = time.Now().Add(ttl * 2 / 3)
		}
		wait := r.backoff(st)
		st.log.Warn("audit delivery failed; retrying", slog.String("error", derr.Error()),
			slog.Int64("seq", events[accepted].Seq), slog.Duration("retryIn", wait))
		return wait, false
	}
	st.failures = 0
	r.noteMoved(st.name, false)
	return 0, len(events) == r.opts.BatchSize
}

// fail logs a storage error of a step and returns the wait before the next.
func (r *Runner) fail(ctx context.Context, st *sinkState, what string, err error) time.Duration {
	if ctx.Err() != nil {
		return 0
	}
	st.log.Error("audit delivery: "+what, slog.String("error", err.Error()))
	return r.backoff(st)
}

// backoff returns the wait after one more failure in a row: doubling from MinBackoff up to
// MaxBackoff, drawn from the upper half of that (jitter), and counts the failure.
func (r *Runner) backoff(st *sinkState) time.Duration {
	d := r.opts.MinBackoff
	for i := 0; i < st.failures && d < r.opts.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, r.opts.MaxBackoff)
	st.failures++
	var b [8]byte
	_, _ = rand.Read(b[:])
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + time.Duration(binary.LittleEndian.Uint64(b[:])%uint64(half))
}
